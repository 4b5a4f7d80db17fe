//! The "physical limit" for `make bench`: the same axum + rustls (ring) + tokio stack as
//! the sizer, answering every POST with a fixed AdmissionReview precomputed for the payload
//! (by the sizer's own code, once, at start). The body is still read in full.
//!
//! cargo run --release --example baseline -- LISTEN CERT KEY PAYLOAD

use axum::body::Bytes;
use axum::routing::post;
use axum::Router;
use sidecar_sizer::engine::pipeline::Snapshots;
use sidecar_sizer::webhook::wire::{review, Mode, Settings};
use std::sync::Arc;

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let [_, listen, cert, key, payload] = args.as_slice() else {
        anyhow::bail!("usage: baseline LISTEN CERT KEY PAYLOAD");
    };
    let body = std::fs::read(payload)?;
    let answer = review(
        &body,
        Mode::Enforce,
        &Settings::default(),
        &Snapshots {
            specs: &Default::default(),
            usage: &Default::default(),
            cluster: &Default::default(),
            mesh: None,
            hpas: None,
        },
    )
    .map_err(|e| anyhow::anyhow!("{e}"))?
    .body;
    let answer = Bytes::from(answer);
    let (config, _) = sidecar_sizer::certs::load_server_config(cert.as_ref(), key.as_ref(), None)?;
    let rt = tokio::runtime::Runtime::new()?;
    rt.block_on(async move {
        let tls = axum_server::tls_rustls::RustlsConfig::from_config(config);
        let fixed = Arc::new(answer);
        let app = Router::new().route(
            "/mutate",
            post(move |_body: Bytes| {
                let fixed = fixed.clone();
                async move { ([("content-type", "application/json")], (*fixed).clone()) }
            }),
        );
        let addr: std::net::SocketAddr = listen.parse()?;
        eprintln!("baseline listening on {addr}");
        // Same socket options as the sizer (TCP_NODELAY), so the comparison is fair.
        let acceptor = axum_server::tls_rustls::RustlsAcceptor::new(tls)
            .acceptor(axum_server::accept::NoDelayAcceptor::new());
        axum_server::bind(addr)
            .acceptor(acceptor)
            .serve(app.into_make_service())
            .await?;
        Ok(())
    })
}
