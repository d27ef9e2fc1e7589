//! The pages the server serves itself: `/debug` (an interactive test client) and `/admin`
//! (a live dashboard). Their HTML, CSS and JS live in `clients/web/` and are embedded in the
//! binary; nothing is fetched from elsewhere at run time. The pages speak Socket.IO with
//! their own small client (`clients/web/roomcast.js`) over the browser's WebSocket.

use axum::Router;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use super::AppState;
use crate::config::PagesConfig;

/// One embedded file and its content type.
struct Asset {
    path: &'static str,
    body: &'static str,
    content_type: &'static str,
}

const HTML: &str = "text/html; charset=utf-8";
const JS: &str = "text/javascript; charset=utf-8";
const CSS: &str = "text/css; charset=utf-8";

const SHARED: &[Asset] = &[
    Asset {
        path: "/pages/roomcast.js",
        body: include_str!("../../clients/web/roomcast.js"),
        content_type: JS,
    },
    Asset {
        path: "/pages/pages.css",
        body: include_str!("../../clients/web/pages.css"),
        content_type: CSS,
    },
];

const DEBUG: &[Asset] = &[
    Asset {
        path: "/debug",
        body: include_str!("../../clients/web/debug.html"),
        content_type: HTML,
    },
    Asset {
        path: "/pages/debug.js",
        body: include_str!("../../clients/web/debug.js"),
        content_type: JS,
    },
];

const ADMIN: &[Asset] = &[
    Asset {
        path: "/admin",
        body: include_str!("../../clients/web/admin.html"),
        content_type: HTML,
    },
    Asset {
        path: "/pages/admin.js",
        body: include_str!("../../clients/web/admin.js"),
        content_type: JS,
    },
];

/// Scripts and styles only from this server, no inline script, connections (fetch and
/// WebSocket) only back to it, and never inside a frame.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; \
                   img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// The routes of the pages `config` turns on.
pub(super) fn routes(config: &PagesConfig) -> Router<AppState> {
    let mut router = Router::new();
    let mut assets: Vec<&'static Asset> = Vec::new();
    if config.debug {
        assets.extend(DEBUG);
    }
    if config.admin {
        assets.extend(ADMIN);
    }
    if config.debug || config.admin {
        assets.extend(SHARED);
    }
    for asset in assets {
        router = router.route(asset.path, get(move || async move { serve(asset) }));
    }
    router
}

fn serve(asset: &'static Asset) -> Response {
    (
        [
            (header::CONTENT_TYPE, asset.content_type),
            (header::CACHE_CONTROL, "no-cache"),
            (header::CONTENT_SECURITY_POLICY, CSP),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (header::REFERRER_POLICY, "no-referrer"),
        ],
        asset.body,
    )
        .into_response()
}
