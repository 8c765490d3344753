//! Members that come from one runtime source (DNS discovery, the registry), merged into an
//! upstream's members beside the file's and the admin API's.

use crate::balance::StateStore;
use crate::runtime::upstream::{BackendOrigin, UpstreamBackend};
use crate::runtime::Upstream;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;

/// A member a source asks for.
pub struct Wanted<'a> {
    pub addr: SocketAddr,
    pub weight: u32,
    pub backup: bool,
    pub metadata: Option<&'a BTreeMap<String, String>>,
}

/// `members` with the members of `origin` replaced by `wanted`. An address already there
/// keeps its settings (the file and the admin API win); `fresh` sees each added member whose
/// address had no live state before (new to the whole gateway).
pub fn merge_origin<'a>(
    mut members: Vec<UpstreamBackend>,
    origin: BackendOrigin,
    wanted: impl IntoIterator<Item = Wanted<'a>>,
    store: &StateStore,
    mut fresh: impl FnMut(&UpstreamBackend),
) -> Vec<UpstreamBackend> {
    members.retain(|b| b.origin != origin);
    for w in wanted {
        if members.iter().any(|b| b.addr() == w.addr) {
            continue;
        }
        let is_new = store.get(&w.addr).is_none();
        let mut b = Upstream::backend_from(store, w.addr, w.weight, w.backup);
        b.origin = origin;
        if let Some(m) = w.metadata {
            b.metadata = Arc::new(m.clone());
        }
        if is_new {
            fresh(&b);
        }
        members.push(b);
    }
    members
}
