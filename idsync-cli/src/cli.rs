//! The command line, as clap sees it.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

const AFTER_HELP: &str = "\
Exit codes:
  0  success
  1  error: a provider, the store or the network failed; a run or entity was not found
  2  bad config: syntax, unknown field, bad reference, missing secret (with line:column)
  3  guard stop: the run crossed a safety threshold; nothing was applied.
     Review it, then `idsync approve RUN`
  4  partial failure: some operations failed or were skipped, the others were applied
  5  busy: another worker holds the job's lease
  6  lease lost: another worker took the job's lease over mid-run; this run stopped
     before its next write

Secrets (passwords, app secrets, database URLs) are never written in the config: it
names an environment variable (`password_env = \"LDAP_PW\"`) or a file
(`password_file = \"/run/secrets/ldap\"`). They are never printed.

Quick start (from the repository root):
  cargo run -p idsync-cli -- run quickstart --config idsync-cli/quickstart.toml";

/// idsync: keep accounts and the org tree consistent across directories.
#[derive(Debug, Parser)]
#[command(name = "idsync", version, about, after_help = AFTER_HELP)]
pub struct Cli {
    /// The configuration file.
    #[arg(
        short,
        long,
        global = true,
        env = "IDSYNC_CONFIG",
        default_value = "idsync.toml"
    )]
    pub config: PathBuf,

    /// Print less: no progress bars, no hints.
    #[arg(short, long, global = true)]
    pub quiet: bool,

    /// Log format on stderr: `text`, or `json` (one JSON object a line, for log
    /// collectors; what `idsync serve` in production wants).
    #[arg(long, global = true, env = "IDSYNC_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,

    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Write a commented sample configuration (to --config, default idsync.toml).
    Init {
        /// Overwrite an existing file.
        #[arg(long)]
        force: bool,
    },
    /// Validate the configuration (every error with its line and column) and check that
    /// every provider and the store can be reached.
    Check {
        /// Only validate the file; do not connect to anything.
        #[arg(long)]
        offline: bool,
    },
    /// Read both sides of a job and show what a run would do, without applying anything.
    Plan {
        /// The job (a `[jobs.NAME]` table).
        job: String,
        /// Plan only what changed since the last run (incremental).
        #[arg(long)]
        changes: bool,
        /// Print the plan as JSON.
        #[arg(long)]
        json: bool,
        /// List every operation (default: the first 20).
        #[arg(long)]
        all: bool,
    },
    /// Plan and apply a job. Stops at the guard (exit 3) and prints the run id to approve.
    Run(RunArgs),
    /// Serve the hub: run every job that has a `schedule` (under fenced leases), take
    /// provider callbacks into the durable inbox, and serve the change feed, the import
    /// API, SCIM and OIDC as `[serve]` configures them; until SIGINT or SIGTERM.
    Serve,
    /// Make an API token for `[serve]`: prints the token once and the config line with
    /// its SHA-256 (the only thing the config keeps).
    Token {
        /// A name for logs (e.g. the app that uses it).
        name: String,
        /// What it may do, comma-separated: read, write, import, admin.
        #[arg(long, value_delimiter = ',', required = true)]
        scopes: Vec<idsync_serve::auth::Scope>,
    },
    /// Apply the stored plan of a run the guard stopped.
    Approve {
        /// The run id printed by `run` (see `idsync runs`).
        run: String,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
        /// Wait for the job's lease instead of exiting with code 5.
        #[arg(long)]
        wait: bool,
    },
    /// List recent runs, newest first.
    Runs {
        /// Only runs of this job.
        #[arg(long)]
        job: Option<String>,
        /// How many.
        #[arg(long, default_value_t = 20)]
        limit: usize,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Show a hub record and its audit trail, or a run and its stored plan.
    Show {
        /// `account`, `org` or `run`.
        kind: KindArg,
        /// The hub anchor (for `run`: the run id).
        anchor: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Export the hub's accounts or orgs as CSV or JSON.
    Export {
        /// What to export.
        #[arg(long, value_enum, default_value_t = ExportWhat::Accounts)]
        what: ExportWhat,
        /// The format.
        #[arg(long, value_enum, default_value_t = ExportFormat::Csv)]
        format: ExportFormat,
        /// Write to this file instead of stdout.
        #[arg(short, long)]
        output: Option<PathBuf>,
        /// Start the CSV with a UTF-8 byte order mark (Excel then reads it as UTF-8).
        #[arg(long)]
        bom: bool,
    },
}

/// `idsync run`.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// The job (a `[jobs.NAME]` table).
    pub job: String,
    /// Apply only what changed since the last run (incremental; the source must report
    /// changes). Without a stored cursor this is a full run.
    #[arg(long)]
    pub changes: bool,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
    /// Wait for the job's lease instead of exiting with code 5.
    #[arg(long)]
    pub wait: bool,
}

/// `--log-format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// Entity kinds on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum KindArg {
    /// An account.
    Account,
    /// An org.
    Org,
    /// A run: its status and stored plan (ANCHOR is the run id).
    Run,
}

/// What `export` writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ExportWhat {
    /// Accounts.
    Accounts,
    /// Orgs.
    Orgs,
}

/// Export formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ExportFormat {
    /// CSV as the csv provider reads it: a header row, list fields joined by `;`, one
    /// `attrs.NAME` column per attribute, formula-like cells neutralised with a leading `'`.
    Csv,
    /// A JSON array of entities as the model serializes them.
    Json,
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_is_consistent() {
        Cli::command().debug_assert();
        let c = Cli::try_parse_from(["idsync", "run", "j", "--changes"]).unwrap();
        assert!(matches!(
            c.command,
            Command::Run(RunArgs { changes: true, .. })
        ));
        let help = Cli::command().render_long_help().to_string();
        assert!(help.contains("guard stop"));
    }
}
