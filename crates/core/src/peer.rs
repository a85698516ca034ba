//! Between servers of one cluster: a server hands a keyless sync invocation to the server its
//! chosen worker is attached to, which gives it straight to that worker (no store on the way
//! out, as on the worker's own server) and answers the outcome. Authenticated with the
//! cluster's peer secret, which the servers share through the store (workers and clients
//! never see it).
//!
//! Both bodies are framed the same way, so a payload or a result crosses as raw bytes: a
//! 4-byte big-endian length, that many bytes of JSON (the invocation, or the answer), then the
//! bytes (its payload, or its result).
//!
//! Plain data: no HTTP, no I/O.

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::{FunctionErrorBody, InvocationRequest, Mode, Report};

/// Where a server takes invocations handed over by its peers.
pub const INVOKE_PATH: &str = "/internal/v1/peer/invoke";

/// The content type of both framed bodies.
pub const CONTENT_TYPE: &str = "application/vnd.gust.peer";

/// Longest JSON part of a frame (an invocation's fields, or an answer's log and error).
pub const MAX_META_BYTES: usize = 256 * 1024;

/// What the server a sync invocation was handed to answers (the JSON part of its frame; a
/// success's result is the frame's bytes).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum Answer {
    /// It ran there, or its worker was lost there (it may have run): never run it again.
    Finished {
        executed_version: String,
        /// `None`: it succeeded, and the frame's bytes are its result.
        error: Option<FunctionErrorBody>,
        log: String,
        report: Option<Report>,
    },
    /// No worker there took it: it has not run, and the sender runs it another way.
    NotStarted,
}

/// Why a frame was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("the frame is shorter than its length prefix says")]
    Truncated,
    #[error("the frame's JSON part is {0} bytes, more than {MAX_META_BYTES}")]
    TooLong(usize),
    #[error("the frame's JSON part is malformed: {0}")]
    Malformed(String),
    #[error("only a sync invocation without an idempotency key may be handed to a peer")]
    NotHandable,
}

/// `meta` as JSON, then `bytes`, in one frame.
pub fn frame<T: Serialize>(meta: &T, bytes: &[u8]) -> Vec<u8> {
    let json = serde_json::to_vec(meta).expect("plain data serializes");
    let mut out = Vec::with_capacity(4 + json.len() + bytes.len());
    out.extend_from_slice(&(json.len() as u32).to_be_bytes());
    out.extend_from_slice(&json);
    out.extend_from_slice(bytes);
    out
}

/// A frame's JSON part, read as `T`, and its bytes.
pub fn unframe<T: serde::de::DeserializeOwned>(body: &Bytes) -> Result<(T, Bytes), FrameError> {
    let len = body.get(..4).ok_or(FrameError::Truncated)?;
    let len = u32::from_be_bytes(len.try_into().expect("4 bytes")) as usize;
    if len > MAX_META_BYTES {
        return Err(FrameError::TooLong(len));
    }
    let json = body.get(4..4 + len).ok_or(FrameError::Truncated)?;
    let meta = serde_json::from_slice(json).map_err(|e| FrameError::Malformed(e.to_string()))?;
    Ok((meta, body.slice(4 + len..)))
}

/// The frame that hands `request` over: its fields, then its payload.
pub fn request_frame(request: &InvocationRequest) -> Vec<u8> {
    let fields = InvocationRequest { payload: Bytes::new(), ..request.clone() };
    frame(&fields, &request.payload)
}

/// The invocation a frame hands over, refused unless it is one a peer may take (sync, no key).
pub fn read_request(body: &Bytes) -> Result<InvocationRequest, FrameError> {
    let (mut request, payload): (InvocationRequest, Bytes) = unframe(body)?;
    if request.mode != Mode::Sync || request.idempotency_key.is_some() {
        return Err(FrameError::NotHandable);
    }
    request.payload = payload;
    Ok(request)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_frame_carries_its_bytes_raw_and_refuses_a_lying_length() {
        let body = Bytes::from(frame(&Answer::NotStarted, b"\x00\xffraw"));
        let (answer, bytes): (Answer, Bytes) = unframe(&body).unwrap();
        assert_eq!(answer, Answer::NotStarted);
        assert_eq!(&bytes[..], b"\x00\xffraw");
        let mut lying = body.to_vec();
        lying[..4].copy_from_slice(&(body.len() as u32).to_be_bytes());
        assert_eq!(unframe::<Answer>(&Bytes::from(lying)).unwrap_err(), FrameError::Truncated);
        let mut huge = body.to_vec();
        huge[..4].copy_from_slice(&u32::MAX.to_be_bytes());
        assert!(matches!(unframe::<Answer>(&Bytes::from(huge)), Err(FrameError::TooLong(_))));
        assert_eq!(unframe::<Answer>(&Bytes::from_static(b"\x00\x00")).unwrap_err(), FrameError::Truncated);
    }
}
