//! `/readyz`, `/healthz` and `/metrics` on a small blocking HTTP server in its own thread.
use std::sync::Arc;

use anyhow::{anyhow, Result};
use tiny_http::{Header, Response, Server};

use crate::status::Status;

pub fn serve(addr: &str, status: Arc<Status>, log: slog::Logger) -> Result<()> {
    let server = Server::http(addr).map_err(|e| anyhow!("listen on {addr}: {e}"))?;
    std::thread::Builder::new().name("http".into()).spawn(move || {
        for req in server.incoming_requests() {
            let (code, body, kind) = match req.url() {
                "/readyz" => match status.ready() {
                    Ok(()) => (200, "ready\n".to_string(), "text/plain"),
                    Err(why) => (503, format!("not ready: {why}\n"), "text/plain"),
                },
                "/healthz" => (200, "ok\n".to_string(), "text/plain"),
                "/metrics" => (200, status.metrics(), "text/plain; version=0.0.4"),
                _ => (404, "not found\n".to_string(), "text/plain"),
            };
            let header = Header::from_bytes("Content-Type", kind).expect("static header");
            if let Err(e) = req.respond(Response::from_string(body).with_status_code(code).with_header(header)) {
                slog::debug!(log, "HTTP response failed"; "error" => %e);
            }
        }
    })?;
    Ok(())
}
