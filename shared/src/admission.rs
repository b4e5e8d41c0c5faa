//! Which calls a server takes on: the gate in front of every gRPC service of both binaries.
//!
//! - Every call must authenticate ([`crate::auth`]): UNAUTHENTICATED at once otherwise, before any
//!   handler and so before any database work; the verified [`crate::auth::Caller`] goes into the
//!   request's extensions for the handler.
//! - Until the service is ready (its database reached and migrated), calls get `UNAVAILABLE`
//!   at once, so a process whose dependency is down keeps running and answering health checks
//!   instead of exiting into a crash loop.
//! - At most `max_in_flight` calls run at a time in the process; one more gets
//!   `RESOURCE_EXHAUSTED` at once instead of queueing without bound (load shedding: a client
//!   retries with backoff, or another replica takes it).
//!
//! Health and reflection are never gated: an orchestrator must be able to ask a starting or
//! overloaded process how it is, and a liveness probe must not fail because of load.

use std::{
    future::Future,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
};

use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};

use crate::auth::{Authentication, Caller};

/// Paths that pass whatever the state: health checks and server reflection.
const UNGATED_PREFIXES: &[&str] = &["/grpc.health.", "/grpc.reflection."];

/// Tells the gate the service is ready; dropping it leaves the gate closed.
#[derive(Debug)]
pub struct Readiness(watch::Sender<bool>);

impl Readiness {
    pub fn set_ready(&self) {
        self.0.send_replace(true);
    }
}

/// A tower layer for `tonic::transport::Server::layer`.
#[derive(Debug, Clone)]
pub struct AdmissionLayer {
    ready: watch::Receiver<bool>,
    permits: Arc<Semaphore>,
    max_in_flight: usize,
    authentication: Authentication,
}

impl AdmissionLayer {
    /// A closed gate letting at most `max_in_flight` authenticated calls through once opened;
    /// the returned [`Readiness`] opens it.
    pub fn new(max_in_flight: usize, authentication: Authentication) -> (Self, Readiness) {
        let (sender, ready) = watch::channel(false);
        let layer = Self {
            ready,
            permits: Arc::new(Semaphore::new(max_in_flight)),
            max_in_flight,
            authentication,
        };
        (layer, Readiness(sender))
    }

    /// Follows the gate: true once the service is ready.
    pub fn ready(&self) -> watch::Receiver<bool> {
        self.ready.clone()
    }
}

impl<S> tower::Layer<S> for AdmissionLayer {
    type Service = Admission<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Admission {
            inner,
            layer: self.clone(),
        }
    }
}

/// The gate around one connection's services (the semaphore is shared by all connections).
#[derive(Debug, Clone)]
pub struct Admission<S> {
    inner: S,
    layer: AdmissionLayer,
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

impl<S, B, RB> tower::Service<http::Request<B>> for Admission<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<RB>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    B: Send + 'static,
    RB: Default + Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = BoxFuture<Result<S::Response, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<B>) -> Self::Future {
        // The clone is the one that is not ready yet; call the one poll_ready was asked about.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let path = request.uri().path();
        if UNGATED_PREFIXES
            .iter()
            .any(|prefix| path.starts_with(prefix))
        {
            return Box::pin(inner.call(request));
        }
        let refusal = match self.admit(request.headers()) {
            Ok((caller, permit)) => {
                request.extensions_mut().insert(caller);
                return Box::pin(async move {
                    let response = inner.call(request).await;
                    // Held until the response starts: a server stream (WatchOrders) then runs on
                    // without holding a slot.
                    drop(permit);
                    response
                });
            }
            Err(status) => status,
        };
        Box::pin(std::future::ready(Ok(refusal.into_http())))
    }
}

impl<S> Admission<S> {
    fn admit(
        &self,
        headers: &http::HeaderMap,
    ) -> Result<(Caller, OwnedSemaphorePermit), tonic::Status> {
        let caller = self.layer.authentication.authenticate(headers)?;
        if !*self.layer.ready.borrow() {
            return Err(tonic::Status::unavailable(
                "starting: the service's database is not reachable yet; retry shortly",
            ));
        }
        let permit = self
            .layer
            .permits
            .clone()
            .try_acquire_owned()
            .map_err(|_| {
                tonic::Status::resource_exhausted(format!(
                    "overloaded: {} calls in flight; retry with backoff",
                    self.layer.max_in_flight
                ))
            })?;
        Ok((caller, permit))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::{convert::Infallible, time::Duration};

    use tower::{Layer, ServiceExt};

    use super::*;

    type Answer = Result<http::Response<String>, Infallible>;

    /// A service whose calls answer once `open` is true (health at once), so calls can be held
    /// in flight.
    fn held_until(
        open: watch::Receiver<bool>,
    ) -> impl tower::Service<
        http::Request<()>,
        Response = http::Response<String>,
        Error = Infallible,
        Future = BoxFuture<Answer>,
    > + Clone {
        tower::service_fn(move |request: http::Request<()>| {
            let mut open = open.clone();
            let health = request.uri().path().starts_with("/grpc.health.");
            Box::pin(async move {
                if !health {
                    let _ = open.wait_for(|open| *open).await;
                }
                Ok(http::Response::new("done".to_owned()))
            }) as BoxFuture<Answer>
        })
    }

    async fn call<S>(service: &mut S, path: &str) -> http::Response<String>
    where
        S: tower::Service<http::Request<()>, Response = http::Response<String>, Error = Infallible>,
    {
        let request = http::Request::builder().uri(path).body(()).unwrap();
        service.ready().await.unwrap().call(request).await.unwrap()
    }

    fn code(response: &http::Response<String>) -> Option<tonic::Code> {
        tonic::Status::from_header_map(response.headers()).map(|status| status.code())
    }

    const COMMAND: &str = "/pizzeria.v1.CommandService/PlaceOrder";
    const HEALTH: &str = "/grpc.health.v1.Health/Check";

    #[tokio::test]
    async fn calls_are_unavailable_until_ready_but_health_always_passes() {
        let (_open, open_rx) = watch::channel(true);
        let (layer, readiness) = AdmissionLayer::new(4, Authentication::Disabled);
        let mut service = layer.layer(held_until(open_rx));

        let refused = call(&mut service, COMMAND).await;
        assert_eq!(code(&refused), Some(tonic::Code::Unavailable));
        assert_eq!(call(&mut service, HEALTH).await.body(), "done");

        readiness.set_ready();
        assert_eq!(call(&mut service, COMMAND).await.body(), "done");
    }

    #[tokio::test]
    async fn a_call_beyond_the_limit_is_shed_at_once_and_a_slot_frees_when_one_finishes() {
        let (open, open_rx) = watch::channel(false);
        let (layer, readiness) = AdmissionLayer::new(2, Authentication::Disabled);
        readiness.set_ready();
        let service = layer.layer(held_until(open_rx));

        let held: Vec<_> = (0..2)
            .map(|_| {
                let mut connection = service.clone();
                tokio::spawn(async move { call(&mut connection, COMMAND).await })
            })
            .collect();
        while layer_in_flight(&service) < 2 {
            tokio::task::yield_now().await;
        }

        let mut another = service.clone();
        let shed = tokio::time::timeout(Duration::from_secs(1), call(&mut another, COMMAND))
            .await
            .expect("a shed call answers at once");
        assert_eq!(code(&shed), Some(tonic::Code::ResourceExhausted));
        // Health still answers while the process is at its limit.
        assert_eq!(call(&mut another, HEALTH).await.body(), "done");

        open.send_replace(true);
        for held in held {
            assert_eq!(held.await.unwrap().body(), "done");
        }
        assert_eq!(call(&mut another, COMMAND).await.body(), "done");
    }

    fn layer_in_flight<S>(service: &Admission<S>) -> usize {
        service.layer.max_in_flight - service.layer.permits.available_permits()
    }
}
