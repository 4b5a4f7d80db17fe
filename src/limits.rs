//! Protection against slow and abusive clients: a connection limit (applied before the TLS
//! handshake), an in-flight request limit, and the request budget taken from the
//! apiserver's `?timeout=`.

use axum_server::accept::Accept;
use std::io;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

#[derive(Debug, Clone)]
pub struct Limits {
    /// Open TLS connections at most; more are closed at accept.
    pub max_connections: usize,
    /// Requests being read or sized at once; more are answered allowed-without-patch.
    pub max_inflight: usize,
    pub handshake_timeout: Duration,
    /// Time a client has to send its request headers (HTTP/1.1).
    pub header_read_timeout: Duration,
    /// Concurrent HTTP/2 streams per connection.
    pub max_streams: u32,
    /// Upper bound of the request budget; the apiserver's `?timeout=` lowers it.
    pub max_budget: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_connections: 1024,
            max_inflight: 256,
            handshake_timeout: Duration::from_secs(5),
            header_read_timeout: Duration::from_secs(5),
            max_streams: 256,
            max_budget: Duration::from_secs(10),
        }
    }
}

/// The time we may spend on a request: 80 % of the apiserver's `?timeout=` (it gives up at
/// 100 %), at most `max`. Unparseable or absent: `max`.
pub fn budget(query: Option<&str>, max: Duration) -> Duration {
    let timeout = query
        .into_iter()
        .flat_map(|q| q.split('&'))
        .find_map(|kv| kv.strip_prefix("timeout="))
        .and_then(|v| humantime::parse_duration(v).ok());
    match timeout {
        Some(t) if !t.is_zero() => (t.mul_f64(0.8)).min(max),
        _ => max,
    }
}

/// Inner acceptor (before TLS) that holds a permit per connection, or refuses it.
#[derive(Clone)]
pub struct LimitAcceptor {
    permits: Arc<Semaphore>,
    refused: prometheus_client::metrics::counter::Counter,
}

impl LimitAcceptor {
    pub fn new(max: usize, refused: prometheus_client::metrics::counter::Counter) -> Self {
        LimitAcceptor {
            permits: Arc::new(Semaphore::new(max.max(1))),
            refused,
        }
    }
}

impl<I: Send + 'static, S: Send + 'static> Accept<I, S> for LimitAcceptor {
    type Stream = I;
    type Service = PermitService<S>;
    type Future = std::future::Ready<io::Result<(I, PermitService<S>)>>;

    fn accept(&self, stream: I, service: S) -> Self::Future {
        match self.permits.clone().try_acquire_owned() {
            Ok(permit) => std::future::ready(Ok((
                stream,
                PermitService {
                    inner: service,
                    _permit: Arc::new(permit),
                },
            ))),
            Err(_) => {
                self.refused.inc();
                std::future::ready(Err(io::Error::other("connection limit reached")))
            }
        }
    }
}

/// A connection's service, holding its connection permit until the connection ends.
#[derive(Clone)]
pub struct PermitService<S> {
    inner: S,
    _permit: Arc<OwnedSemaphorePermit>,
}

impl<S: tower::Service<R>, R> tower::Service<R> for PermitService<S> {
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: R) -> Self::Future {
        self.inner.call(req)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn budget_from_query() {
        let max = Duration::from_secs(10);
        assert_eq!(budget(Some("timeout=2s"), max), Duration::from_millis(1600));
        assert_eq!(budget(Some("a=b&timeout=10s"), max), Duration::from_secs(8));
        assert_eq!(budget(Some("timeout=60s"), max), max);
        assert_eq!(budget(Some("timeout=soon"), max), max);
        assert_eq!(budget(Some("timeout=0s"), max), max);
        assert_eq!(budget(None, max), max);
    }
}
