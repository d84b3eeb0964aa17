//! A client for `GET /orders/events` in tests: the request, then the
//! server-sent events one at a time, as the server writes them (HTTP/1.1
//! chunked), without a client crate.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// One event: its `id:`, `event:` (`message` when absent) and `data:`.
/// Comments (keep-alives) are not events.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    pub id: Option<String>,
    pub event: String,
    pub data: String,
}

/// An open event stream (or the answer that refused it).
#[derive(Debug)]
pub struct EventStream {
    pub status: u16,
    pub head: String,
    socket: TcpStream,
    /// Bytes read and not yet de-chunked.
    raw: Vec<u8>,
    /// The body so far, not yet split into events.
    body: Vec<u8>,
}

/// Sends `GET path` with `Last-Event-ID` when given, and reads the answer's
/// head. Fails the test if there is none within 10 s.
pub async fn open_events(addr: SocketAddr, path: &str, last_event_id: Option<&str>) -> EventStream {
    let resume: Vec<(&str, &str)> = last_event_id
        .map(|id| vec![("Last-Event-ID", id)])
        .unwrap_or_default();
    open_events_with(addr, path, &resume).await
}

/// [`open_events`] with any request headers (`("Authorization", "Bearer ...")`).
pub async fn open_events_with(
    addr: SocketAddr,
    path: &str,
    headers: &[(&str, &str)],
) -> EventStream {
    let opened = async {
        let mut socket = TcpStream::connect(addr)
            .await
            .unwrap_or_else(|e| panic!("connecting to {addr}: {e}"));
        let extra: String = headers
            .iter()
            .map(|(name, value)| format!("{name}: {value}\r\n"))
            .collect();
        let request = format!(
            "GET {path} HTTP/1.1\r\nHost: {addr}\r\nAccept: text/event-stream\r\n{extra}Connection: close\r\n\r\n"
        );
        socket.write_all(request.as_bytes()).await.expect("send");
        let mut raw = Vec::new();
        let split = loop {
            if let Some(at) = raw.windows(4).position(|w| w == b"\r\n\r\n") {
                break at;
            }
            let mut buf = [0u8; 4096];
            let n = socket.read(&mut buf).await.expect("read");
            assert!(n > 0, "closed before a response head");
            raw.extend_from_slice(&buf[..n]);
        };
        let head = String::from_utf8_lossy(&raw[..split]).into_owned();
        let status = head
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .expect("a status code");
        let raw = raw[split + 4..].to_vec();
        EventStream {
            status,
            head,
            socket,
            raw,
            body: Vec::new(),
        }
    };
    tokio::time::timeout(Duration::from_secs(10), opened)
        .await
        .unwrap_or_else(|_| panic!("GET {path} on {addr}: no answer within 10 s"))
}

impl EventStream {
    /// The next event, or `None` once the server has ended the stream.
    /// Fails the test if none comes within `timeout`.
    pub async fn next_event(&mut self, timeout: Duration) -> Option<Event> {
        tokio::time::timeout(timeout, self.read_event())
            .await
            .unwrap_or_else(|_| panic!("no event within {timeout:?}"))
    }

    /// Events until `count` of them, or the end of the stream.
    pub async fn events(&mut self, count: usize, timeout: Duration) -> Vec<Event> {
        let mut events = Vec::with_capacity(count);
        while events.len() < count {
            match self.next_event(timeout).await {
                Some(event) => events.push(event),
                None => break,
            }
        }
        events
    }

    /// The rest of an answer that is not a stream (a refusal, with
    /// `Connection: close`), as sent.
    pub async fn rest(mut self) -> Vec<u8> {
        let mut rest = std::mem::take(&mut self.raw);
        tokio::time::timeout(Duration::from_secs(10), self.socket.read_to_end(&mut rest))
            .await
            .expect("the answer within 10 s")
            .expect("read");
        rest
    }

    /// Whether the server has closed the connection (waiting at most `timeout`).
    pub async fn closed_within(&mut self, timeout: Duration) -> bool {
        tokio::time::timeout(timeout, async {
            let mut buf = [0u8; 4096];
            loop {
                match self.socket.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {}
                }
            }
        })
        .await
        .is_ok()
    }

    async fn read_event(&mut self) -> Option<Event> {
        loop {
            if let Some(at) = self.body.windows(2).position(|w| w == b"\n\n") {
                let block: Vec<u8> = self.body.drain(..at + 2).collect();
                if let Some(event) = parse(&String::from_utf8_lossy(&block)) {
                    return Some(event);
                }
                continue;
            }
            if self.dechunk() {
                continue;
            }
            let mut buf = [0u8; 16384];
            match self.socket.read(&mut buf).await {
                Ok(0) | Err(_) => return None,
                Ok(n) => self.raw.extend_from_slice(&buf[..n]),
            }
        }
    }

    /// Moves one whole chunk from `raw` to `body`; whether there was one.
    fn dechunk(&mut self) -> bool {
        let Some(line_end) = self.raw.windows(2).position(|w| w == b"\r\n") else {
            return false;
        };
        let size_text = String::from_utf8_lossy(&self.raw[..line_end]).into_owned();
        let size = usize::from_str_radix(size_text.trim(), 16)
            .unwrap_or_else(|_| panic!("a chunk size, got {size_text:?}"));
        let start = line_end + 2;
        if self.raw.len() < start + size + 2 {
            return false;
        }
        self.body.extend_from_slice(&self.raw[start..start + size]);
        self.raw.drain(..start + size + 2);
        true
    }
}

/// One event block, or `None` for a block of comments alone.
fn parse(block: &str) -> Option<Event> {
    let mut event = Event {
        id: None,
        event: "message".to_owned(),
        data: String::new(),
    };
    let mut any = false;
    for line in block.lines() {
        let (field, value) = line.split_once(':').unwrap_or((line, ""));
        let value = value.strip_prefix(' ').unwrap_or(value);
        match field {
            "" => continue,
            "id" => event.id = Some(value.to_owned()),
            "event" => event.event = value.to_owned(),
            "data" => event.data.push_str(value),
            _ => {}
        }
        any = true;
    }
    any.then_some(event)
}
