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

/// How a streamed invocation ended (its task may have panicked).
pub(crate) type Ended = Result<Result<Invoked, ServiceError>, tokio::task::JoinError>;

/// An invocation started with a stream: what it streams arrives in order ([`Streaming::begin`],
/// then [`Streaming::next_chunk`] until `None`), and [`Streaming::end`] says how it ended. A
/// function that does not stream, or runs on a remote worker, streams nothing: its whole
/// result is in the end.
pub(crate) struct Streaming {
    rx: mpsc::Receiver<Streamed>,
    invocation: tokio::task::JoinHandle<Result<Invoked, ServiceError>>,
    /// How it ended, once seen while waiting for the stream to begin.
    ended: Option<Ended>,
}

/// A piece of a streamed response: a chunk, or, last, how the invocation ended.
pub(crate) enum Piece {
    Chunk(Bytes),
    End(Ended),
}

pub(crate) fn start(service: Arc<Service>, mut input: InvokeInput) -> Streaming {
    let (tx, rx) = mpsc::channel(CHUNKS_IN_FLIGHT);
    input.stream = Some(Arc::new(ChannelStream(tx)));
    let invocation = tokio::spawn(async move { service.invoke(input).await });
    Streaming { rx, invocation, ended: None }
}

impl Streaming {
    /// The content type the function began streaming with; `None` if the invocation ended
    /// without streaming (or failed before it ran): then [`Streaming::end`] holds its answer.
    /// (The runtime says `begin` before its first chunk, on the same ordered channel.)
    pub(crate) async fn begin(&mut self) -> Option<String> {
        tokio::select! {
            // What was streamed comes first, even when the invocation has ended too (a quick
            // function can stream and end before this looks).
            biased;
            m = self.rx.recv() => match m {
                Some(Streamed::Begin(content_type)) => Some(content_type),
                // Every sender is gone: the invocation ended without streaming.
                _ => None,
            },
            done = &mut self.invocation => {
                self.ended = Some(done);
                None
            }
        }
    }

    /// The next non-empty chunk; `None` once the function has finished streaming.
    pub(crate) async fn next_chunk(&mut self) -> Option<Bytes> {
        loop {
            match self.rx.recv().await? {
                Streamed::Chunk(c) if !c.is_empty() => return Some(c),
                _ => continue,
            }
        }
    }

    /// How the invocation ended.
    pub(crate) async fn end(self) -> Ended {
        match self.ended {
            Some(ended) => ended,
            None => self.invocation.await,
        }
    }

    /// The chunks still to come, then how the invocation ended.
    pub(crate) fn rest(self) -> impl futures_util::Stream<Item = Piece> {
        futures_util::stream::unfold(Some(self), |streaming| async move {
            let mut streaming = streaming?;
            match streaming.next_chunk().await {
                Some(c) => Some((Piece::Chunk(c), Some(streaming))),
                None => Some((Piece::End(streaming.end().await), None)),
            }
        })
    }
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
