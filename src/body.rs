//! The one response body type: either bytes the gateway produced or a streamed upstream body.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use http_body_util::Full;

use crate::proxy::pool::PooledBody;

/// A response body without boxing: the fast path streams the upstream's body straight through.
#[derive(Debug)]
pub enum GatewayBody {
    /// A body the gateway made itself (pages, JSON, redirects).
    Full(Full<Bytes>),
    /// The upstream's body, streamed frame by frame.
    Upstream(PooledBody),
}

impl GatewayBody {
    /// An empty body.
    pub fn empty() -> Self {
        GatewayBody::Full(Full::new(Bytes::new()))
    }
}

impl From<String> for GatewayBody {
    fn from(s: String) -> Self {
        GatewayBody::Full(Full::new(Bytes::from(s)))
    }
}

impl From<&'static str> for GatewayBody {
    fn from(s: &'static str) -> Self {
        GatewayBody::Full(Full::new(Bytes::from_static(s.as_bytes())))
    }
}

impl From<Bytes> for GatewayBody {
    fn from(b: Bytes) -> Self {
        GatewayBody::Full(Full::new(b))
    }
}

impl Body for GatewayBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        match self.get_mut() {
            GatewayBody::Full(b) => Pin::new(b).poll_frame(cx).map_err(|never| match never {}),
            GatewayBody::Upstream(b) => Pin::new(b).poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            GatewayBody::Full(b) => b.is_end_stream(),
            GatewayBody::Upstream(b) => b.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            GatewayBody::Full(b) => b.size_hint(),
            GatewayBody::Upstream(b) => b.size_hint(),
        }
    }
}
