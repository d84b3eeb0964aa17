//! Response bodies: a whole answer in memory (every route but one), or an
//! event stream (`GET /orders/events`) written as the orders are stored.
//! An enum rather than a boxed body, so the other routes cost what they
//! cost before: no allocation, no dynamic call.

use std::convert::Infallible;
use std::future::Future as _;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{BufMut as _, Bytes, BytesMut};
use futures::StreamExt as _;
use http_body_util::Full;
use hyper::body::{Frame, SizeHint};
use orders_domain::{LiveItem, LiveStream};
use tokio::time::{Instant, Sleep};

use crate::auth::Revocation;

/// The body of every answer.
#[derive(Debug)]
pub enum Body {
    Full(Full<Bytes>),
    Events(EventBody),
}

impl Body {
    pub fn full(bytes: impl Into<Bytes>) -> Self {
        Self::Full(Full::new(bytes.into()))
    }
}

impl hyper::body::Body for Body {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        match self.get_mut() {
            Body::Full(full) => Pin::new(full).poll_frame(cx),
            Body::Events(events) => events.poll_frame(cx).map(|frame| frame.map(Ok)),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            Body::Full(full) => full.is_end_stream(),
            Body::Events(_) => false,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            Body::Full(full) => full.size_hint(),
            Body::Events(_) => SizeHint::default(),
        }
    }
}

/// A comment line: keeps proxies and the idle timeout from closing a
/// quiet stream.
const KEEP_ALIVE: &[u8] = b": keep-alive\n\n";

/// An open `text/event-stream`: each order as
/// `id: ID\nevent: order\ndata: {summary}\n\n`, `event: reset` when the
/// client should reload the list, and a comment after `keep_alive` without
/// anything else. It is polled only as fast as the client reads: a client
/// that stops reading holds its place in the fan-out (bounded, shared),
/// and the server's write timeout ends the connection. A stream opened
/// with a token ends once a reloaded tokens file no longer lists it.
pub struct EventBody {
    stream: LiveStream,
    keep_alive: Duration,
    quiet_until: Pin<Box<Sleep>>,
    /// Ready when the token that opened the stream is revoked.
    revocation: Option<Revocation>,
}

impl std::fmt::Debug for EventBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventBody")
            .field("keep_alive", &self.keep_alive)
            .finish_non_exhaustive()
    }
}

impl EventBody {
    pub fn new(stream: LiveStream, keep_alive: Duration) -> Self {
        Self {
            stream,
            keep_alive,
            quiet_until: Box::pin(tokio::time::sleep(keep_alive)),
            revocation: None,
        }
    }

    /// Ends the stream when `revocation` is ready.
    pub(crate) fn until_revoked(mut self, revocation: Revocation) -> Self {
        self.revocation = Some(revocation);
        self
    }

    fn poll_frame(&mut self, cx: &mut Context<'_>) -> Poll<Option<Frame<Bytes>>> {
        if let Some(revocation) = &mut self.revocation
            && Pin::new(revocation).poll(cx).is_ready()
        {
            return Poll::Ready(None);
        }
        let data = match self.stream.poll_next_unpin(cx) {
            Poll::Ready(Some(item)) => encode(&item),
            Poll::Ready(None) => return Poll::Ready(None),
            Poll::Pending => {
                if self.quiet_until.as_mut().poll(cx).is_pending() {
                    return Poll::Pending;
                }
                Bytes::from_static(KEEP_ALIVE)
            }
        };
        let next = Instant::now() + self.keep_alive;
        self.quiet_until.as_mut().reset(next);
        Poll::Ready(Some(Frame::data(data)))
    }
}

/// One event in the `text/event-stream` format. The summary is compact
/// JSON: one line.
fn encode(item: &LiveItem) -> Bytes {
    match item {
        LiveItem::Order(order) => {
            let id = order.id.to_string();
            let mut event = BytesMut::with_capacity(order.summary.len() + id.len() + 32);
            event.put_slice(b"id: ");
            event.put_slice(id.as_bytes());
            event.put_slice(b"\nevent: order\ndata: ");
            event.put_slice(&order.summary);
            event.put_slice(b"\n\n");
            event.freeze()
        }
        LiveItem::Reset => Bytes::from_static(b"event: reset\ndata: {}\n\n"),
    }
}

#[cfg(test)]
mod tests {
    use http_body_util::BodyExt as _;
    use orders_domain::{EventId, LiveOrder};

    use super::*;

    #[test]
    fn orders_and_resets_are_written_as_server_sent_events() {
        let order = LiveItem::Order(LiveOrder {
            id: EventId::new(42),
            summary: Bytes::from_static(b"{\"order_uid\":\"a\"}"),
        });

        assert_eq!(
            encode(&order),
            "id: 42\nevent: order\ndata: {\"order_uid\":\"a\"}\n\n"
        );
        assert_eq!(encode(&LiveItem::Reset), "event: reset\ndata: {}\n\n");
    }

    #[tokio::test(start_paused = true)]
    async fn a_quiet_stream_gets_a_comment_each_keep_alive_period() {
        let stream = futures::stream::pending().boxed();
        let mut body = Body::Events(EventBody::new(stream, Duration::from_secs(15)));

        let started = Instant::now();
        let first = body.frame().await.expect("a frame").expect("infallible");
        let second = body.frame().await.expect("a frame").expect("infallible");

        assert_eq!(first.into_data().expect("data"), KEEP_ALIVE);
        assert_eq!(second.into_data().expect("data"), KEEP_ALIVE);
        assert_eq!(started.elapsed(), Duration::from_secs(30));
    }

    #[tokio::test]
    async fn the_body_ends_when_the_stream_does() {
        let stream = futures::stream::iter([LiveItem::Reset]).boxed();
        let body = Body::Events(EventBody::new(stream, Duration::from_secs(15)));

        let all = body.collect().await.expect("infallible").to_bytes();

        assert_eq!(all, "event: reset\ndata: {}\n\n");
    }
}
