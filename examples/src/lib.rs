//! Helpers shared by the idsync examples: the bundled sample org chart.
