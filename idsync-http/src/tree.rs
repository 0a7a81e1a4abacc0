//! A resumable breadth-first walk over a department tree.

use std::collections::{BTreeMap, VecDeque};
use std::fmt::Display;

use idsync_core::{Error, Result};
use serde::{Deserialize, Serialize};

/// Breadth-first walk state over a tree whose children are listed one department at a
/// time (DingTalk `listsub`, WeCom `simplelist`, Lark `children`).
///
/// Serializable, so it can live in a page token. It keeps a visited set (with each node's
/// parent) and a depth limit: a child listed under a second parent, a child that is one of
/// its own ancestors (a cycle) and a tree deeper than the limit are **errors**, never
/// silently skipped subtrees.
///
/// ```
/// use idsync_http::TreeWalk;
/// let mut w = TreeWalk::new(1_i64, 10);
/// let (root, depth) = w.next().unwrap();
/// w.add_children(&root, depth, [2, 3]).unwrap();
/// assert_eq!(w.next(), Some((2, 1)));
/// assert!(w.add_children(&2, 1, [1]).is_err()); // the root under its child: a cycle
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(bound(
    serialize = "Id: Serialize + Ord",
    deserialize = "Id: Deserialize<'de> + Ord"
))]
pub struct TreeWalk<Id> {
    /// Nodes whose children are still to be listed, with their depth.
    #[serde(rename = "q")]
    queue: VecDeque<(Id, u32)>,
    /// Every node seen, with its parent (`None` for the root).
    #[serde(rename = "v")]
    parents: BTreeMap<Id, Option<Id>>,
    #[serde(rename = "m")]
    max_depth: u32,
}

impl<Id: Ord + Clone + Display> TreeWalk<Id> {
    /// A walk from `root` (depth 0) allowing nodes down to `max_depth`.
    pub fn new(root: Id, max_depth: u32) -> Self {
        TreeWalk {
            queue: VecDeque::from([(root.clone(), 0)]),
            parents: BTreeMap::from([(root, None)]),
            max_depth,
        }
    }

    /// The next node whose children are to be listed, and its depth.
    #[allow(clippy::should_implement_trait)]
    pub fn next(&mut self) -> Option<(Id, u32)> {
        self.queue.pop_front()
    }

    /// Puts a node taken with [`next`](TreeWalk::next) back at the front (its listing
    /// failed and will be retried).
    pub fn push_front(&mut self, id: Id, depth: u32) {
        self.queue.push_front((id, depth));
    }

    /// Records the children of `parent` (at `depth`) and queues them. Returns them in
    /// order. Errors (`InvalidData`) on a cycle, a node listed under two parents, or a
    /// node deeper than the limit; the state is unchanged then.
    pub fn add_children(
        &mut self,
        parent: &Id,
        depth: u32,
        children: impl IntoIterator<Item = Id>,
    ) -> Result<Vec<Id>> {
        let children: Vec<Id> = children.into_iter().collect();
        let child_depth = depth.saturating_add(1);
        let mut fresh = std::collections::BTreeSet::new();
        for c in &children {
            if c == parent || self.is_ancestor(c, parent) {
                return Err(Error::invalid_data(format!(
                    "the department tree has a cycle: {c} is listed under {parent}, its own descendant"
                )));
            }
            if let Some(first) = self.parents.get(c) {
                let first = first
                    .as_ref()
                    .map(ToString::to_string)
                    .unwrap_or_else(|| "(root)".to_owned());
                return Err(Error::invalid_data(format!(
                    "department {c} is listed under both {first} and {parent}"
                )));
            }
            if !fresh.insert(c.clone()) {
                return Err(Error::invalid_data(format!(
                    "department {c} is listed twice under {parent}"
                )));
            }
            if child_depth > self.max_depth {
                return Err(Error::invalid_data(format!(
                    "department {c} under {parent} is deeper than {} levels",
                    self.max_depth
                )));
            }
        }
        for c in &children {
            self.parents.insert(c.clone(), Some(parent.clone()));
            self.queue.push_back((c.clone(), child_depth));
        }
        Ok(children)
    }

    /// True when `id` was seen.
    pub fn visited(&self, id: &Id) -> bool {
        self.parents.contains_key(id)
    }

    /// The parent of a seen node (`None` for the root or an unseen node).
    pub fn parent(&self, id: &Id) -> Option<&Id> {
        self.parents.get(id).and_then(Option::as_ref)
    }

    /// True when no node is left to list.
    pub fn is_done(&self) -> bool {
        self.queue.is_empty()
    }

    /// Number of nodes seen.
    pub fn len(&self) -> usize {
        self.parents.len()
    }

    /// Never true: the root is always seen.
    pub fn is_empty(&self) -> bool {
        self.parents.is_empty()
    }

    fn is_ancestor(&self, candidate: &Id, of: &Id) -> bool {
        let mut cur = self.parents.get(of).and_then(Option::as_ref);
        let mut steps = 0usize;
        while let Some(p) = cur {
            if p == candidate {
                return true;
            }
            steps += 1;
            if steps > self.parents.len() {
                return true; // a loop in the recorded parents: treat as a cycle
            }
            cur = self.parents.get(p).and_then(Option::as_ref);
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn breadth_first_order_and_errors() {
        let mut w = TreeWalk::new(1_i64, 2);
        let mut order = Vec::new();
        let children = |id: i64| match id {
            1 => vec![2, 3],
            2 => vec![4],
            3 => vec![5],
            _ => vec![],
        };
        while let Some((id, d)) = w.next() {
            order.push((id, d));
            w.add_children(&id, d, children(id)).unwrap();
        }
        assert_eq!(order, vec![(1, 0), (2, 1), (3, 1), (4, 2), (5, 2)]);
        assert_eq!(w.parent(&5), Some(&3));
        assert_eq!(w.len(), 5);

        let e = w.add_children(&4, 2, [6]).unwrap_err();
        assert!(e.message().contains("deeper than 2"), "{}", e.message());
        let e = w.add_children(&5, 2, [3]).unwrap_err();
        assert!(e.message().contains("cycle"), "{}", e.message());
        let e = w.add_children(&3, 1, [4]).unwrap_err();
        assert!(e.message().contains("both 2 and 3"), "{}", e.message());
        let e = w.add_children(&1, 0, [1]).unwrap_err();
        assert!(e.message().contains("cycle"));
        assert!(w.is_done(), "failed additions queue nothing");
    }

    #[test]
    fn serializes_into_a_token() {
        let mut w = TreeWalk::new("root".to_owned(), 5);
        let (r, d) = w.next().unwrap();
        w.add_children(&r, d, ["a".to_owned()]).unwrap();
        let t = crate::encode_token(&w).unwrap();
        let back: TreeWalk<String> = crate::decode_token("demo", &t).unwrap();
        assert_eq!(back, w);
    }
}
