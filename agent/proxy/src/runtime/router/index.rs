//! The route index of one virtual host: which routes a path can match, found by hash lookups
//! whose number depends on the path, not on how many routes there are.

use std::collections::HashMap;
use std::sync::Arc;

use portico_api::pb::{self, route_match};
use regex::RegexSet;

use super::{PathMatch, Route, path_of};

/// Marks the end of a chain in [`RouteIndex::next`].
const END: u32 = u32::MAX;

/// Which routes a path can match, by path condition. Routes sharing an exact path or a prefix
/// key are chained through `next`, so the index allocates little more than its keys.
#[derive(Debug)]
pub(super) struct RouteIndex {
    /// Exact paths, each to its last route.
    exact: HashMap<Box<str>, u32>,
    /// The last route whose prefix key is "" (e.g. prefix "/"), which every path is under.
    root: u32,
    /// Other prefix keys (see [`prefix_key`]), each to its last route.
    prefixes: HashMap<Arc<str>, u32>,
    /// Most '/' in a prefix key: longer parts of a path cannot be keys.
    prefix_depth: usize,
    /// Per route, the route before it with the same exact path or prefix key ([`END`]: none).
    next: Vec<u32>,
    regex: Option<(RegexSet, Vec<u32>)>,
    any: Vec<u32>,
}

/// The part of a prefix that paths are looked up by: from its first '/', without one trailing
/// '/', so "/api" and "/api/" share the key "/api" and "/" has the key "". A prefix that does
/// not start with '/' matches no path; it is kept under the key of its part from the first '/'
/// (and is then rejected by [`super::prefix_holds`]).
fn prefix_key(prefix: &str) -> &str {
    let trimmed = prefix.strip_suffix('/').unwrap_or(prefix);
    &trimmed[trimmed.find('/').unwrap_or(trimmed.len())..]
}

impl RouteIndex {
    #[inline]
    fn chain(&self, mut route: u32, out: &mut Vec<u32>) {
        while route != END {
            out.push(route);
            route = self.next.get(route as usize).copied().unwrap_or(END);
        }
    }

    #[inline]
    pub(super) fn candidates(&self, path: &str, out: &mut Vec<u32>) {
        out.extend_from_slice(&self.any);
        if let Some(&last) = self.exact.get(path) {
            self.chain(last, out);
        }
        self.chain(self.root, out);
        if !self.prefixes.is_empty() {
            let path = &path[path.find('/').unwrap_or(path.len())..];
            let ends = path
                .match_indices('/')
                .map(|(i, _)| i)
                .skip(1)
                .chain([path.len()])
                .filter(|end| *end > 0)
                .take(self.prefix_depth);
            for end in ends {
                if let Some(&last) = self.prefixes.get(&path[..end]) {
                    self.chain(last, out);
                }
            }
        }
        if let Some((set, routes)) = &self.regex {
            out.extend(
                set.matches(path)
                    .iter()
                    .filter_map(|i| routes.get(i).copied()),
            );
        }
        out.sort_unstable();
        out.dedup();
    }

    /// Indexes `routes` (one virtual host's, in order) by their path conditions.
    pub(super) fn build(
        routes: &[pb::Route],
        compiled: &[Arc<Route>],
    ) -> Result<RouteIndex, portico_api::pattern::PatternError> {
        let count = |want: fn(&route_match::Path) -> bool| {
            routes
                .iter()
                .filter(|r| path_of(r).is_some_and(want))
                .count()
        };
        let mut index = RouteIndex {
            exact: HashMap::with_capacity(count(|p| matches!(p, route_match::Path::Exact(_)))),
            root: END,
            prefixes: HashMap::with_capacity(count(|p| matches!(p, route_match::Path::Prefix(_)))),
            prefix_depth: 0,
            next: vec![END; routes.len()],
            regex: None,
            any: Vec::new(),
        };
        let mut regexes = Vec::new();
        let mut regex_routes = Vec::new();
        for (i, (route, compiled)) in routes.iter().zip(compiled).enumerate() {
            let r = i as u32;
            match path_of(route) {
                None => index.any.push(r),
                Some(route_match::Path::Exact(p)) => {
                    index.next[i] = index.exact.insert(p.as_str().into(), r).unwrap_or(END);
                }
                Some(route_match::Path::Prefix(p)) => {
                    let key = prefix_key(p);
                    let previous = if key.is_empty() {
                        std::mem::replace(&mut index.root, r)
                    } else {
                        let key = match &compiled.path {
                            PathMatch::Prefix(shared) if **shared == *key => shared.clone(),
                            _ => key.into(),
                        };
                        index.prefix_depth = index.prefix_depth.max(key.matches('/').count());
                        index.prefixes.insert(key, r).unwrap_or(END)
                    };
                    index.next[i] = previous;
                }
                Some(route_match::Path::Regex(re)) => {
                    regexes.push(re.as_str());
                    regex_routes.push(r);
                }
            }
        }
        if !regexes.is_empty() {
            let set = portico_api::pattern::anchored_set(regexes)?;
            index.regex = Some((set, regex_routes));
        }
        Ok(index)
    }
}
