//! The endpoint set as the keys under the prefix describe it, and the updates a change produces.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;

use crate::discover::{Endpoint, Update};

/// The last good endpoint of every key, indexed by key and by address.
///
/// Endpoints are identified by address; when two keys name the same address, the endpoint of the
/// smallest key (byte order) is the effective one, and the address stays until no key names it.
#[derive(Debug, Default)]
pub(crate) struct KeySet {
    keys: HashMap<Vec<u8>, SocketAddr>,
    by_addr: HashMap<SocketAddr, BTreeMap<Vec<u8>, Endpoint>>,
}

impl KeySet {
    fn effective(&self, addr: &SocketAddr) -> Option<&Endpoint> {
        self.by_addr.get(addr).and_then(|m| m.values().next())
    }

    /// Number of distinct endpoints (addresses).
    #[cfg(any(test, feature = "metrics"))]
    pub(crate) fn len(&self) -> usize {
        self.by_addr.len()
    }

    /// Whether `key` currently holds an endpoint.
    pub(crate) fn endpoint_of(&self, key: &[u8]) -> Option<&Endpoint> {
        let addr = self.keys.get(key)?;
        self.by_addr.get(addr).and_then(|m| m.get(key))
    }

    fn remove_key(&mut self, key: &[u8]) -> Option<SocketAddr> {
        let addr = self.keys.remove(key)?;
        if let Some(m) = self.by_addr.get_mut(&addr) {
            m.remove(key);
            if m.is_empty() {
                self.by_addr.remove(&addr);
            }
        }
        Some(addr)
    }

    fn insert_key(&mut self, key: Vec<u8>, ep: Endpoint) {
        let addr = ep.addr();
        self.keys.insert(key.clone(), addr);
        self.by_addr.entry(addr).or_default().insert(key, ep);
    }

    /// Applies a change to one key (`Some` = put, `None` = delete) and appends the updates it
    /// causes to the effective set.
    fn change(&mut self, key: Vec<u8>, ep: Option<Endpoint>, out: &mut Vec<Update>) {
        let mut affected: Vec<SocketAddr> = Vec::with_capacity(2);
        if let Some(old) = self.keys.get(&key) {
            affected.push(*old);
        }
        if let Some(ep) = &ep
            && !affected.contains(&ep.addr())
        {
            affected.push(ep.addr());
        }
        let before: Vec<Option<Endpoint>> = affected
            .iter()
            .map(|a| self.effective(a).cloned())
            .collect();
        self.remove_key(&key);
        if let Some(ep) = ep {
            self.insert_key(key, ep);
        }
        for (addr, before) in affected.iter().zip(before) {
            let after = self.effective(addr);
            if before.as_ref() != after {
                out.push(match after {
                    Some(ep) => Update::Insert(ep.clone()),
                    None => Update::Remove(*addr),
                });
            }
        }
    }

    /// A put of a well-formed value.
    pub(crate) fn put(&mut self, key: Vec<u8>, ep: Endpoint, out: &mut Vec<Update>) {
        self.change(key, Some(ep), out);
    }

    /// A delete.
    pub(crate) fn delete(&mut self, key: Vec<u8>, out: &mut Vec<Update>) {
        self.change(key, None, out);
    }

    /// Replaces the whole set with a fresh range read. A key whose value is malformed (`None`)
    /// keeps its last good endpoint, if it had one, exactly as a malformed put does.
    pub(crate) fn reload(&mut self, entries: Vec<(Vec<u8>, Option<Endpoint>)>) {
        let mut next = KeySet::default();
        for (key, ep) in entries {
            let ep = match ep {
                Some(ep) => ep,
                None => match self.endpoint_of(&key) {
                    Some(old) => old.clone(),
                    None => continue,
                },
            };
            next.insert_key(key, ep);
        }
        *self = next;
    }

    /// The effective endpoints, sorted by address.
    pub(crate) fn endpoints(&self) -> Vec<Endpoint> {
        let mut v: Vec<Endpoint> = self
            .by_addr
            .values()
            .filter_map(|m| m.values().next().cloned())
            .collect();
        v.sort_by_key(Endpoint::addr);
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ep(s: &str) -> Endpoint {
        Endpoint::new(s.parse().unwrap())
    }

    fn k(s: &str) -> Vec<u8> {
        s.as_bytes().to_vec()
    }

    #[test]
    fn put_change_delete_produce_inserts_and_removes() {
        let mut set = KeySet::default();
        let mut out = Vec::new();
        set.put(k("svc/a"), ep("10.0.0.1:1"), &mut out);
        assert_eq!(out, [Update::Insert(ep("10.0.0.1:1"))]);

        // Same value again: nothing changes, nothing is emitted.
        out.clear();
        set.put(k("svc/a"), ep("10.0.0.1:1"), &mut out);
        assert!(out.is_empty());

        // New weight: the endpoint is replaced.
        out.clear();
        let heavy = ep("10.0.0.1:1").with_weight(2).unwrap();
        set.put(k("svc/a"), heavy.clone(), &mut out);
        assert_eq!(out, [Update::Insert(heavy)]);

        // The key now names another address: the old one goes, the new one comes.
        out.clear();
        set.put(k("svc/a"), ep("10.0.0.2:1"), &mut out);
        assert_eq!(
            out,
            [
                Update::Remove("10.0.0.1:1".parse().unwrap()),
                Update::Insert(ep("10.0.0.2:1"))
            ]
        );

        out.clear();
        set.delete(k("svc/a"), &mut out);
        assert_eq!(out, [Update::Remove("10.0.0.2:1".parse().unwrap())]);
        assert_eq!(set.len(), 0);

        // Deleting an unknown key is a no-op.
        out.clear();
        set.delete(k("svc/zzz"), &mut out);
        assert!(out.is_empty());
    }

    #[test]
    fn two_keys_for_one_address_keep_it_until_both_are_gone() {
        let mut set = KeySet::default();
        let mut out = Vec::new();
        let a = ep("10.0.0.1:1").with_label("from", "a");
        let b = ep("10.0.0.1:1").with_label("from", "b");
        set.put(k("svc/b"), b.clone(), &mut out);
        set.put(k("svc/a"), a.clone(), &mut out);
        // The smallest key wins.
        assert_eq!(out, [Update::Insert(b.clone()), Update::Insert(a.clone())]);
        assert_eq!(set.endpoints(), [a]);

        out.clear();
        set.delete(k("svc/a"), &mut out);
        assert_eq!(out, [Update::Insert(b)]);
        out.clear();
        set.delete(k("svc/b"), &mut out);
        assert_eq!(out, [Update::Remove("10.0.0.1:1".parse().unwrap())]);
    }

    #[test]
    fn reload_keeps_last_good_value_of_malformed_keys_and_drops_missing_keys() {
        let mut set = KeySet::default();
        let mut out = Vec::new();
        set.put(k("svc/a"), ep("10.0.0.1:1"), &mut out);
        set.put(k("svc/b"), ep("10.0.0.2:1"), &mut out);
        set.put(k("svc/c"), ep("10.0.0.3:1"), &mut out);
        set.reload(vec![
            (k("svc/a"), None),                    // malformed now: keeps 10.0.0.1
            (k("svc/b"), Some(ep("10.0.0.22:1"))), // changed
            (k("svc/d"), None),                    // malformed and new: nothing
                                                   // svc/c is gone
        ]);
        assert_eq!(set.endpoints(), [ep("10.0.0.1:1"), ep("10.0.0.22:1")]);
        assert_eq!(set.len(), 2);
    }
}
