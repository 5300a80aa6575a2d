use std::collections::{HashMap, VecDeque};
use std::convert::Infallible;
use std::fmt;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use futures_core::Stream;
use pin_project_lite::pin_project;
use tower::discover::Change;

use super::{Endpoint, Update};

pin_project! {
    /// Turns a meshwork discovery source into a tower [`Discover`](tower::discover::Discover)
    /// stream, so that it can feed tower's own balancers.
    ///
    /// `make` builds a service for each endpoint. Updates are turned into tower changes keyed by
    /// address:
    ///
    /// - an [`Update::Reset`] is diffed against the current set: every endpoint that is no longer
    ///   listed becomes a [`Change::Remove`], every new endpoint a [`Change::Insert`]; an endpoint
    ///   listed again unchanged produces nothing (its service and load are kept);
    /// - an endpoint whose weight or labels changed becomes a `Change::Insert` under the same
    ///   address, which tower's balancers treat as a replacement of the old service;
    /// - an `Insert` or `Remove` that changes nothing produces nothing.
    ///
    /// tower fails the whole balancer on a discovery error, so this adapter does *not* forward the
    /// source's `Err` items: it drops them with a debug event and keeps the current set (meshwork's
    /// own sources log at warn and count every failure themselves). Its error type is therefore
    /// [`Infallible`]. When the source ends, the stream ends and tower keeps the current services.
    ///
    /// ```
    /// use std::future::ready;
    /// use meshwork::discover::{Endpoint, Static, TowerDiscover};
    /// use tower::balance::p2c::Balance;
    /// use tower::load::Constant;
    /// use tower::{BoxError, ServiceExt};
    ///
    /// # tokio_test::block_on(async {
    /// let addr = "127.0.0.1:8080".parse().unwrap();
    /// let source = Static::new([Endpoint::new(addr)]);
    /// let discover = TowerDiscover::new(source, |ep: &Endpoint| {
    ///     let addr = ep.addr();
    ///     Constant::new(tower::service_fn(move |()| ready(Ok::<_, BoxError>(addr))), 0)
    /// });
    /// let balance = Balance::new(discover);
    /// assert_eq!(balance.oneshot(()).await.unwrap(), addr);
    /// # });
    /// ```
    pub struct TowerDiscover<D, M, S> {
        #[pin]
        source: D,
        make: M,
        current: HashMap<SocketAddr, Endpoint>,
        pending: VecDeque<Change<SocketAddr, S>>,
        done: bool,
    }
}

impl<D, M, S> TowerDiscover<D, M, S> {
    /// Adapts `source`, making a service for each endpoint with `make`.
    pub fn new(source: D, make: M) -> Self {
        Self {
            source,
            make,
            current: HashMap::new(),
            pending: VecDeque::new(),
            done: false,
        }
    }

    /// The endpoints tower has been told about so far (changes already produced).
    pub fn endpoints(&self) -> impl Iterator<Item = &Endpoint> {
        self.current.values()
    }
}

fn apply<M, S>(
    update: Update,
    current: &mut HashMap<SocketAddr, Endpoint>,
    pending: &mut VecDeque<Change<SocketAddr, S>>,
    make: &mut M,
) where
    M: FnMut(&Endpoint) -> S,
{
    match update {
        Update::Reset(list) => {
            let next: HashMap<SocketAddr, Endpoint> =
                list.into_iter().map(|e| (e.addr(), e)).collect();
            current.retain(|addr, _| {
                let kept = next.contains_key(addr);
                if !kept {
                    pending.push_back(Change::Remove(*addr));
                }
                kept
            });
            for ep in next.into_values() {
                insert(ep, current, pending, make);
            }
        }
        Update::Insert(ep) => insert(ep, current, pending, make),
        Update::Remove(addr) => {
            if current.remove(&addr).is_some() {
                pending.push_back(Change::Remove(addr));
            }
        }
    }
}

/// Adds `ep`, or replaces the endpoint at its address, unless it is already there unchanged.
fn insert<M, S>(
    ep: Endpoint,
    current: &mut HashMap<SocketAddr, Endpoint>,
    pending: &mut VecDeque<Change<SocketAddr, S>>,
    make: &mut M,
) where
    M: FnMut(&Endpoint) -> S,
{
    if current.get(&ep.addr()) != Some(&ep) {
        pending.push_back(Change::Insert(ep.addr(), make(&ep)));
        current.insert(ep.addr(), ep);
    }
}

impl<D, E, M, S> Stream for TowerDiscover<D, M, S>
where
    D: Stream<Item = Result<Update, E>>,
    E: fmt::Display,
    M: FnMut(&Endpoint) -> S,
{
    type Item = Result<Change<SocketAddr, S>, Infallible>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let mut this = self.project();
        loop {
            if let Some(change) = this.pending.pop_front() {
                return Poll::Ready(Some(Ok(change)));
            }
            if *this.done {
                return Poll::Ready(None);
            }
            match ready!(this.source.as_mut().poll_next(cx)) {
                None => *this.done = true,
                Some(Err(err)) => {
                    tracing::debug!(error = %err, "discovery error not forwarded to tower; keeping the current set");
                }
                Some(Ok(update)) => apply(update, this.current, this.pending, this.make),
            }
        }
    }
}

impl<D, M, S> fmt::Debug for TowerDiscover<D, M, S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TowerDiscover")
            .field("endpoints", &self.current.len())
            .field("pending_changes", &self.pending.len())
            .field("done", &self.done)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::discover::Manual;
    use futures_util::StreamExt;
    use tokio_test::{assert_pending, assert_ready};

    fn ep(port: u16) -> Endpoint {
        Endpoint::new(([127, 0, 0, 1], port).into())
    }

    type Adapter = TowerDiscover<crate::discover::ManualDiscover, fn(&Endpoint) -> u32, u32>;

    /// The changes as (key, Some(service) for insert / None for remove), in a stable order.
    fn drain(d: &mut tokio_test::task::Spawn<Adapter>) -> Vec<(SocketAddr, Option<u32>)> {
        let mut out = Vec::new();
        while let Poll::Ready(Some(Ok(c))) = d.poll_next() {
            out.push(match c {
                Change::Insert(k, s) => (k, Some(s)),
                Change::Remove(k) => (k, None),
            });
        }
        out.sort();
        out
    }

    #[test]
    fn diffs_resets_into_changes() {
        let handle = Manual::with_endpoints([ep(1), ep(2)]);
        let make: fn(&Endpoint) -> u32 = |e| e.weight();
        let mut d = tokio_test::task::spawn(TowerDiscover::new(handle.subscribe(), make));
        assert_eq!(
            drain(&mut d),
            [(ep(1).addr(), Some(1)), (ep(2).addr(), Some(1))]
        );
        // 1 unchanged, 2 reweighted, 3 new; (4 never existed).
        handle.set([ep(1), ep(2).with_weight(4).unwrap(), ep(3)]);
        assert_eq!(
            drain(&mut d),
            [(ep(2).addr(), Some(4)), (ep(3).addr(), Some(1))]
        );
        handle.set([ep(3)]);
        assert_eq!(drain(&mut d), [(ep(1).addr(), None), (ep(2).addr(), None)]);
        handle.remove(ep(9).addr());
        assert_eq!(drain(&mut d), []);
        assert_pending!(d.poll_next());
    }

    #[test]
    fn errors_are_not_forwarded_and_end_is_forwarded() {
        let handle = Manual::with_endpoints([ep(1)]);
        let make: fn(&Endpoint) -> u32 = |e| e.weight();
        let mut d = tokio_test::task::spawn(TowerDiscover::new(handle.subscribe(), make));
        assert_eq!(drain(&mut d), [(ep(1).addr(), Some(1))]);
        handle.fail("boom");
        assert_pending!(d.poll_next());
        drop(handle);
        assert!(assert_ready!(d.poll_next()).is_none());
        assert!(assert_ready!(d.poll_next()).is_none());
        let _ = d.into_inner().endpoints().count();
    }

    #[tokio::test]
    async fn works_with_stream_ext() {
        let make = |e: &Endpoint| e.addr();
        let mut d = TowerDiscover::new(crate::discover::Static::new([ep(5)]), make);
        match d.next().await.unwrap().unwrap() {
            Change::Insert(k, v) => assert_eq!((k, v), (ep(5).addr(), ep(5).addr())),
            Change::Remove(_) => panic!("unexpected remove"),
        }
    }
}
