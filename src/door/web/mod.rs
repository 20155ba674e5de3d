//! The web front door: one HTTP listener (plain, or HTTPS with `--tls-cert`) serving
//! the chat page embedded from `web/`, the JSON protocol over WebSocket at `/ws`,
//! `/healthz` and `/metrics`. Connections come from the doors' shared accept path
//! (`door::listen`: slot, TLS handshake, head deadline) and are handed to axum through
//! a channel, so a slow handshake blocks nobody and every task stays inside the
//! server's shutdown scope.

pub mod frame;
pub mod head_deadline;
pub mod ws;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::connect_info::Connected;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use hyper::upgrade::OnUpgrade;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::json::JsonDoor;
use crate::metrics::Metrics;
use ws::WsLimits;

const INDEX_HTML: &str = include_str!("../../../web/index.html");
const APP_JS: &str = include_str!("../../../web/app.js");
const STYLE_CSS: &str = include_str!("../../../web/style.css");

/// After shutdown starts, HTTP keeps answering (with `/healthz` saying 503) this long
/// on connections already open, so a load balancer sees the drain.
pub const HEALTH_DRAIN: Duration = Duration::from_millis(300);
/// Accepted connections waiting for axum to pick them up.
const ACCEPT_QUEUE: usize = 64;

/// A byte stream axum can serve: plain TCP or TLS over TCP.
pub trait WebStream: AsyncRead + AsyncWrite + Unpin + Send + 'static {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send + 'static> WebStream for T {}

/// The remote address of an HTTP connection (axum's `ConnectInfo`).
#[derive(Debug, Clone, Copy)]
pub struct Peer(pub SocketAddr);

/// Hands connections accepted by the doors' accept path (`door::listen`) to axum.
pub struct WebListener {
    incoming: mpsc::Receiver<(Box<dyn WebStream>, SocketAddr)>,
    local: SocketAddr,
}

impl axum::serve::Listener for WebListener {
    type Io = Box<dyn WebStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.incoming.recv().await {
            Some(accepted) => accepted,
            // The accept loop stopped (shutdown): nothing more will come.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(self.local)
    }
}

impl Connected<axum::serve::IncomingStream<'_, WebListener>> for Peer {
    fn connect_info(stream: axum::serve::IncomingStream<'_, WebListener>) -> Self {
        Peer(*stream.remote_addr())
    }
}

/// Shared by every request.
#[derive(Clone)]
struct WebState {
    door: Arc<JsonDoor>,
    metrics: Metrics,
    limits: Arc<WsLimits>,
    tracker: TaskTracker,
    shutdown: CancellationToken,
}

/// The web door, ready to serve.
pub struct WebDoor {
    state: WebState,
}

impl WebDoor {
    pub fn new(
        door: Arc<JsonDoor>,
        metrics: Metrics,
        limits: WsLimits,
        shutdown: CancellationToken,
        tracker: TaskTracker,
    ) -> Self {
        WebDoor {
            state: WebState {
                door,
                metrics,
                limits: Arc::new(limits),
                tracker,
                shutdown,
            },
        }
    }

    /// The routes, for serving or for calling directly in tests.
    fn router(&self) -> Router {
        Router::new()
            .route("/", get(index))
            .route("/app.js", get(app_js))
            .route("/style.css", get(style_css))
            .route("/healthz", get(healthz))
            .route("/metrics", get(metrics))
            .route("/ws", get(upgrade))
            .with_state(self.state.clone())
    }

    /// Start serving HTTP on the server's tracker until shutdown: connections come
    /// through the returned queue from the doors' accept path (`door::listen`), which
    /// took their slot, did the TLS handshake and put the head deadline on them.
    /// `local` is the listener's address.
    pub fn start(self, local: SocketAddr) -> mpsc::Sender<(Box<dyn WebStream>, SocketAddr)> {
        let (queue, incoming) = mpsc::channel(ACCEPT_QUEUE);
        let app = self.router().into_make_service_with_connect_info::<Peer>();
        let shutdown = self.state.shutdown.clone();
        self.state.tracker.spawn(async move {
            let served = axum::serve(WebListener { incoming, local }, app)
                .with_graceful_shutdown(async move {
                    shutdown.cancelled().await;
                    tokio::time::sleep(HEALTH_DRAIN).await;
                })
                .await;
            if let Err(error) = served {
                tracing::error!(%error, "web: server failed");
            }
        });
        queue
    }
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, HeaderValue::from_static(content_type)),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
            (
                header::X_CONTENT_TYPE_OPTIONS,
                HeaderValue::from_static("nosniff"),
            ),
            (
                header::CONTENT_SECURITY_POLICY,
                HeaderValue::from_static(
                    "default-src 'self'; img-src 'self' data:; connect-src 'self'; \
                     frame-ancestors 'none'; base-uri 'none'",
                ),
            ),
        ],
        body,
    )
        .into_response()
}

async fn index() -> Response {
    asset("text/html; charset=utf-8", INDEX_HTML)
}

async fn app_js() -> Response {
    asset("text/javascript; charset=utf-8", APP_JS)
}

async fn style_css() -> Response {
    asset("text/css; charset=utf-8", STYLE_CSS)
}

async fn healthz(State(state): State<WebState>) -> Response {
    health(&state.shutdown)
}

/// 200 while serving, 503 once shutdown has begun.
fn health(shutdown: &CancellationToken) -> Response {
    if shutdown.is_cancelled() {
        (StatusCode::SERVICE_UNAVAILABLE, "shutting down\n").into_response()
    } else {
        (StatusCode::OK, "ok\n").into_response()
    }
}

async fn metrics(State(state): State<WebState>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
        )],
        state.metrics.render(),
    )
        .into_response()
}

/// A refused upgrade, closing the connection after the answer: the head deadline
/// stopped watching at the word "websocket", so the connection must not stay open.
fn refuse_upgrade(status: StatusCode, text: impl Into<String>) -> Response {
    let mut response = (status, text.into()).into_response();
    response
        .headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    response
}

/// Answer a WebSocket upgrade (the handshake by hand, so the socket afterwards is ours
/// to drive on the [`Conn`](super::conn::Conn) pump) and start the connection's task.
async fn upgrade(
    State(state): State<WebState>,
    ConnectInfo(Peer(peer)): ConnectInfo<Peer>,
    mut request: Request,
) -> Response {
    let limits = &state.limits;
    let certificate = limits.certificate.as_ref();
    let tls = certificate.is_some();
    let checked = ws::check_origin(request.headers(), &limits.origins, tls, certificate)
        .and_then(|()| ws::accept_key(request.headers()));
    let accept = match checked {
        Ok(accept) => accept,
        Err(refusal) => {
            // A page only sees its socket fail, so the operator needs to know. The
            // headers are the client's: logged escaped and cut short, without the advice
            // the client is given (which names whatever origin it sent).
            let quoted = |name| {
                let value = request.headers().get(name).map(|value| value.as_bytes());
                let value = String::from_utf8_lossy(value.unwrap_or_default());
                value.chars().take(200).collect::<String>()
            };
            if refusal.status == StatusCode::FORBIDDEN {
                tracing::info!(
                    %peer,
                    origin = ?quoted(header::ORIGIN),
                    host = ?quoted(header::HOST),
                    "web: WebSocket refused to a page from another origin or under an unlisted name (--ws-origin)"
                );
            } else {
                tracing::debug!(%peer, status = refusal.status.as_u16(), "web: WebSocket upgrade refused");
            }
            let mut response = refuse_upgrade(refusal.status, refusal.text);
            if refusal.status == StatusCode::UPGRADE_REQUIRED {
                response.headers_mut().insert(
                    header::SEC_WEBSOCKET_VERSION,
                    HeaderValue::from_static("13"),
                );
            }
            return response;
        }
    };
    let Some(on_upgrade) = request.extensions_mut().remove::<OnUpgrade>() else {
        return refuse_upgrade(
            StatusCode::UPGRADE_REQUIRED,
            "this connection cannot be upgraded to a WebSocket (HTTP/1.1 needed)\n",
        );
    };
    if state.shutdown.is_cancelled() {
        return refuse_upgrade(StatusCode::SERVICE_UNAVAILABLE, "shutting down\n");
    }
    // Upgraded sockets live outside axum's graceful shutdown: track them ourselves.
    // The connection's slot was taken at accept and stays with the upgraded stream.
    state.tracker.spawn(ws::run(
        state.door.clone(),
        state.limits.clone(),
        on_upgrade,
        peer,
    ));
    (
        StatusCode::SWITCHING_PROTOCOLS,
        [
            (header::CONNECTION, HeaderValue::from_static("upgrade")),
            (header::UPGRADE, HeaderValue::from_static("websocket")),
            (header::SEC_WEBSOCKET_ACCEPT, accept),
        ],
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn health_turns_503_when_shutdown_begins() {
        let shutdown = CancellationToken::new();
        assert_eq!(health(&shutdown).status(), StatusCode::OK);
        shutdown.cancel();
        assert_eq!(health(&shutdown).status(), StatusCode::SERVICE_UNAVAILABLE);
    }
}
