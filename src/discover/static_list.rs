use std::pin::Pin;
use std::task::{Context, Poll};

use futures_core::Stream;

use super::{Endpoint, Update};
use crate::BoxError;

/// A fixed list of endpoints: yields one [`Update::Reset`] and then stays pending forever.
///
/// The stream never ends. That is deliberate: consumers treat a source stream that *ends* as "the
/// source is gone" and keep the last set they had, so a static list that ended would look like a
/// failed source. An empty list is a positive statement: the service has no endpoints.
///
/// ```
/// use futures_util::StreamExt;
/// use meshwork::discover::{Endpoint, Static, Update};
///
/// # tokio_test::block_on(async {
/// let ep = Endpoint::new("127.0.0.1:8080".parse().unwrap());
/// let mut source = Static::new(vec![ep.clone()]);
/// assert_eq!(source.next().await.unwrap().unwrap(), Update::Reset(vec![ep]));
/// // Nothing more: the next poll is pending forever.
/// assert!(futures_util::poll!(source.next()).is_pending());
/// # });
/// ```
#[derive(Clone, Debug)]
pub struct Static {
    endpoints: Option<Vec<Endpoint>>,
}

impl Static {
    /// A source of exactly these endpoints.
    pub fn new(endpoints: impl IntoIterator<Item = Endpoint>) -> Self {
        Self {
            endpoints: Some(endpoints.into_iter().collect()),
        }
    }
}

impl FromIterator<Endpoint> for Static {
    fn from_iter<I: IntoIterator<Item = Endpoint>>(iter: I) -> Self {
        Self::new(iter)
    }
}

impl Stream for Static {
    type Item = Result<Update, BoxError>;

    fn poll_next(mut self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        match self.endpoints.take() {
            Some(endpoints) => Poll::Ready(Some(Ok(Update::Reset(endpoints)))),
            // Nothing will ever change, so no wake-up is registered: pending for good.
            None => Poll::Pending,
        }
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (usize::from(self.endpoints.is_some()), None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::StreamExt;
    use tokio_test::{assert_pending, assert_ready};

    fn ep(port: u16) -> Endpoint {
        Endpoint::new(([127, 0, 0, 1], port).into())
    }

    #[test]
    fn one_reset_then_pending_forever() {
        let mut source: Static = [ep(1), ep(2)].into_iter().collect();
        let mut task = tokio_test::task::spawn(());
        let first = assert_ready!(task.enter(|cx, _| source.poll_next_unpin(cx)));
        assert_eq!(first.unwrap().unwrap(), Update::Reset(vec![ep(1), ep(2)]));
        for _ in 0..3 {
            assert_pending!(task.enter(|cx, _| source.poll_next_unpin(cx)));
        }
        assert!(!task.is_woken());
    }

    #[test]
    fn empty_list_is_a_positive_empty_set() {
        let mut source = Static::new(Vec::new());
        let mut task = tokio_test::task::spawn(());
        let first = assert_ready!(task.enter(|cx, _| source.poll_next_unpin(cx)));
        assert_eq!(first.unwrap().unwrap(), Update::Reset(Vec::new()));
        assert_pending!(task.enter(|cx, _| source.poll_next_unpin(cx)));
    }
}
