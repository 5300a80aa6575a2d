use std::fmt;
use std::task::{Context, Poll};

use tower_service::Service;

use super::optional::Optional;
use crate::BoxError;
use crate::admission::{Admission, AdmissionControl};
use crate::available::Always;
use crate::balance::Balance;
use crate::breaker::{Breaker, State};
use crate::classify::DefaultClassify;
use crate::discover::Endpoint;
use crate::retry::{CloneRequest, Retry};
use crate::timeout::{Timeout, TryDeadline, ViaReplay, WithDeadline};

/// One try's bound around an endpoint's connection service: the per-try timeout, and the
/// request's deadline narrowed to it ([`TryDeadline`]), so that a deadline header below carries
/// `min(time left, per-try timeout)`.
pub type TryStack<S> = Optional<Timeout<TryDeadline<S>>, S>;

/// The per-endpoint stack the balancer picks from: the circuit breaker (gate mode) over the
/// per-try timeout over the connection.
pub type EndpointStack<S, C> = Optional<Breaker<TryStack<S>, C>, Always<TryStack<S>>>;

type Balanced<S, C> = Balance<EndpointStack<S, C>, C>;
type RetryStack<S, C, R> = Optional<Retry<Balanced<S, C>, C, R>, Balanced<S, C>>;
type AdmissionStack<S, C, R> = Optional<Admission<RetryStack<S, C, R>, C>, RetryStack<S, C, R>>;
type Stack<S, C, R> =
    Optional<WithDeadline<AdmissionStack<S, C, R>, ViaReplay<R>>, AdmissionStack<S, C, R>>;

/// The composed client: deadline → admission (optional) → retry → balance → per endpoint [breaker → per-try timeout →
/// connection]. Built by [`ClientBuilder`](super::ClientBuilder).
///
/// `Client` is `Clone + Send + Sync` (when its parts are): clone it into every task. Clones share
/// the endpoint set, loads, breakers and retry budget; no `Buffer` task sits in front.
pub struct Client<S, C = DefaultClassify, R = CloneRequest> {
    stack: Stack<S, C, R>,
}

impl<S, C, R> Clone for Client<S, C, R>
where
    Stack<S, C, R>: Clone,
{
    fn clone(&self) -> Self {
        Self {
            stack: self.stack.clone(),
        }
    }
}

impl<S, C, R> fmt::Debug for Client<S, C, R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client")
            .field("endpoints", &self.balance().len())
            .field("retry_budget", &self.retry_budget())
            .finish_non_exhaustive()
    }
}

/// One endpoint of a [`Client`], for admin pages and tests.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct EndpointInfo {
    /// The endpoint (`None` only for a balancer fed by a tower `Discover`).
    pub endpoint: Option<Endpoint>,
    /// Requests in flight to it.
    pub in_flight: u64,
    /// Its latency estimate (peak EWMA), if the load measures latency.
    pub latency: Option<std::time::Duration>,
    /// The cost P2C compares.
    pub cost: f64,
    /// Its breaker's state, if breakers are on.
    pub breaker: Option<State>,
}

impl<S, C, R> Client<S, C, R> {
    pub(super) fn from_stack(stack: Stack<S, C, R>) -> Self {
        Self { stack }
    }

    /// The admission layer (or the retry layer, when admission is off), under the deadline.
    fn admission_stack(&self) -> &AdmissionStack<S, C, R> {
        match &self.stack {
            Optional::On(deadline) => deadline.get_ref(),
            Optional::Off(admission) => admission,
        }
    }

    /// The retry layer (or the balancer, when retries are off), under the deadline and admission.
    fn retry_stack(&self) -> &RetryStack<S, C, R> {
        match self.admission_stack() {
            Optional::On(admission) => admission.get_ref(),
            Optional::Off(retry) => retry,
        }
    }

    /// The admission controller, when admission control is on.
    pub fn admission(&self) -> Option<&AdmissionControl> {
        self.admission_stack().on().map(|a| a.control())
    }

    /// The balancer, under the deadline and retry layers.
    fn balance(&self) -> &Balanced<S, C> {
        match self.retry_stack() {
            Optional::On(retry) => retry.get_ref(),
            Optional::Off(balance) => balance,
        }
    }

    /// The endpoints the balancer currently knows, with their load and breaker state. Allocates:
    /// keep it off the request path.
    pub fn endpoints(&self) -> Vec<EndpointInfo>
    where
        EndpointStack<S, C>: Clone,
    {
        self.balance()
            .endpoints()
            .into_iter()
            .map(|e| EndpointInfo {
                endpoint: e.endpoint,
                in_flight: e.in_flight,
                latency: e.latency,
                cost: e.cost,
                breaker: e.service.on().map(|b| b.handle().state()),
            })
            .collect()
    }

    /// The retry budget, when retries are on.
    pub fn retry_budget(&self) -> Option<&dyn crate::retry::Budget> {
        self.retry_stack()
            .on()
            .map(|retry| retry.policy().get_budget())
    }
}

impl<S, C, R, Req> Service<Req> for Client<S, C, R>
where
    Stack<S, C, R>: Service<Req, Error = BoxError>,
{
    type Response = <Stack<S, C, R> as Service<Req>>::Response;
    type Error = BoxError;
    type Future = <Stack<S, C, R> as Service<Req>>::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.stack.poll_ready(cx)
    }

    fn call(&mut self, req: Req) -> Self::Future {
        self.stack.call(req)
    }
}
