//! A sync invocation whose response is read while the function streams it (function URLs in
//! RESPONSE_STREAM mode, InvokeWithResponseStream): the invocation runs in a task of its own,
//! and what the runtime streams comes through a bounded channel, so a slow reader slows the
//! function rather than filling gust's memory.

use std::sync::Arc;

use bytes::Bytes;
use gust_core::lambda::{ResponseStream, StreamFuture};
use gust_service::{InvokeInput, Invoked, Service, ServiceError};
use tokio::sync::mpsc;

/// Chunks in flight between the function and a slow reader (then the function waits).
const CHUNKS_IN_FLIGHT: usize = 16;

/// What the function's runtime streams.
pub(crate) enum Streamed {
    /// The stream began, with the content type the runtime declared.
    Begin(String),
    Chunk(Bytes),
}

struct ChannelStream(mpsc::Sender<Streamed>);

impl ResponseStream for ChannelStream {
    fn begin(&self, content_type: &str) -> StreamFuture<'_> {
        let content_type = content_type.to_string();
        Box::pin(async move { self.0.send(Streamed::Begin(content_type)).await.is_ok() })
    }

    fn chunk(&self, bytes: Bytes) -> StreamFuture<'_> {
        Box::pin(async move { self.0.send(Streamed::Chunk(bytes)).await.is_ok() })
    }
}

pub(crate) type Invocation = tokio::task::JoinHandle<Result<Invoked, ServiceError>>;

/// An invocation started with a stream: what it streams arrives on `rx` (which ends when the
/// invocation does), and `invocation` answers how it ended. A function that does not stream,
/// or runs on a remote worker, sends nothing and its whole result is in the answer.
pub(crate) struct Streaming {
    pub(crate) rx: mpsc::Receiver<Streamed>,
    pub(crate) invocation: Invocation,
}

pub(crate) fn start(service: Arc<Service>, mut input: InvokeInput) -> Streaming {
    let (tx, rx) = mpsc::channel(CHUNKS_IN_FLIGHT);
    input.stream = Some(Arc::new(ChannelStream(tx)));
    let invocation = tokio::spawn(async move { service.invoke(input).await });
    Streaming { rx, invocation }
}

/// One message of the AWS event stream encoding (`application/vnd.amazon.eventstream`):
/// lengths and a CRC of them, string headers, the payload, a CRC of it all.
pub(crate) fn event_message(headers: &[(&str, &str)], payload: &[u8]) -> Bytes {
    let mut encoded_headers = Vec::new();
    for (name, value) in headers {
        encoded_headers.push(name.len() as u8);
        encoded_headers.extend_from_slice(name.as_bytes());
        encoded_headers.push(7); // a string
        encoded_headers.extend_from_slice(&(value.len() as u16).to_be_bytes());
        encoded_headers.extend_from_slice(value.as_bytes());
    }
    let total = 12 + encoded_headers.len() + payload.len() + 4;
    let mut out = Vec::with_capacity(total);
    out.extend_from_slice(&(total as u32).to_be_bytes());
    out.extend_from_slice(&(encoded_headers.len() as u32).to_be_bytes());
    let prelude_crc = crc32fast::hash(&out);
    out.extend_from_slice(&prelude_crc.to_be_bytes());
    out.extend_from_slice(&encoded_headers);
    out.extend_from_slice(payload);
    let message_crc = crc32fast::hash(&out);
    out.extend_from_slice(&message_crc.to_be_bytes());
    Bytes::from(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_messages_are_framed_as_aws_event_streams() {
        let m = event_message(&[(":event-type", "PayloadChunk"), (":message-type", "event")], b"hi");
        let total = u32::from_be_bytes(m[0..4].try_into().unwrap()) as usize;
        let headers = u32::from_be_bytes(m[4..8].try_into().unwrap()) as usize;
        assert_eq!(total, m.len());
        assert_eq!(u32::from_be_bytes(m[8..12].try_into().unwrap()), crc32fast::hash(&m[..8]));
        assert_eq!(&m[12 + headers..total - 4], b"hi");
        assert_eq!(u32::from_be_bytes(m[total - 4..].try_into().unwrap()), crc32fast::hash(&m[..total - 4]));
        assert_eq!(m[12] as usize, ":event-type".len());
        assert_eq!(&m[13..24], b":event-type");
    }
}
