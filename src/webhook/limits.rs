//! Protection against slow and abusive clients and against overload: a connection limit
//! (applied before the TLS handshake), the request budget taken from the apiserver's
//! `?timeout=`, and what the handler sheds on (`serve::Shared::handle`): the runtime lag
//! measured here, a review-slot limit (taken after the body is read), the spent budget.

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
    /// Reviews being sized at once (a slot is taken after the body is read); more are
    /// answered allowed-without-patch.
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

impl<S: Send + 'static> Accept<tokio::net::TcpStream, S> for LimitAcceptor {
    type Stream = tokio::net::TcpStream;
    type Service = PermitService<S>;
    type Future = std::future::Ready<io::Result<(tokio::net::TcpStream, PermitService<S>)>>;

    fn accept(&self, stream: tokio::net::TcpStream, service: S) -> Self::Future {
        // Reviews are small request/response exchanges: without TCP_NODELAY, Nagle's
        // algorithm and delayed ACKs add ~40 ms to HTTP/2 answers written in two segments.
        let _ = stream.set_nodelay(true);
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

/// How late the async runtime runs a task that asked to wake every 5 ms: a measure of how
/// long work waits in the run queue. When the one or two cores are saturated, reviews queue
/// up (in the runtime and in socket buffers, before any handler can timestamp them); the lag
/// shows it, and handlers (which read it with one atomic load) answer at once without
/// sizing while it is above 1/8 of the review's budget, until the queue drains.
#[derive(Debug, Default)]
pub struct Lag {
    micros: std::sync::atomic::AtomicU64,
}

impl Lag {
    pub fn get(&self) -> Duration {
        Duration::from_micros(self.micros.load(std::sync::atomic::Ordering::Relaxed))
    }

    /// Run forever, updating the lag (the last tick's lateness, decaying: a single late tick
    /// lifts it at once, a quiet runtime brings it back down within ~100 ms).
    pub async fn monitor(
        self: Arc<Self>,
        gauge: prometheus_client::metrics::gauge::Gauge<f64, std::sync::atomic::AtomicU64>,
    ) {
        const TICK: Duration = Duration::from_millis(5);
        loop {
            let t = tokio::time::Instant::now();
            tokio::time::sleep(TICK).await;
            let late = t.elapsed().saturating_sub(TICK).as_micros() as u64;
            let prev = self.micros.load(std::sync::atomic::Ordering::Relaxed);
            let next = late.max(prev - prev / 4);
            self.micros
                .store(next, std::sync::atomic::Ordering::Relaxed);
            gauge.set(next as f64 / 1e6);
        }
    }
}

/// When the request head was parsed (set in `Service::call`, before the handler's future
/// waits in the runtime's queue), so queueing counts against the budget.
#[derive(Debug, Clone, Copy)]
pub struct Arrival(pub std::time::Instant);

/// Layer stamping every request with its [`Arrival`].
#[derive(Debug, Clone, Copy, Default)]
pub struct ArrivalLayer;

impl<S> tower::Layer<S> for ArrivalLayer {
    type Service = ArrivalService<S>;
    fn layer(&self, inner: S) -> Self::Service {
        ArrivalService { inner }
    }
}

#[derive(Debug, Clone)]
pub struct ArrivalService<S> {
    inner: S,
}

impl<S, B> tower::Service<axum::http::Request<B>> for ArrivalService<S>
where
    S: tower::Service<axum::http::Request<B>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: axum::http::Request<B>) -> Self::Future {
        req.extensions_mut()
            .insert(Arrival(std::time::Instant::now()));
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
