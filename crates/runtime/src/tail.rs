//! A bounded buffer that keeps the last bytes written: logs survive, their head is dropped.

use std::collections::VecDeque;

#[derive(Debug)]
pub struct TailBuffer {
    buf: VecDeque<u8>,
    capacity: usize,
    dropped: u64,
}

impl TailBuffer {
    pub fn new(capacity: usize) -> Self {
        TailBuffer { buf: VecDeque::new(), capacity, dropped: 0 }
    }

    pub fn write(&mut self, bytes: &[u8]) {
        let bytes = if bytes.len() > self.capacity {
            self.dropped += (bytes.len() - self.capacity) as u64;
            &bytes[bytes.len() - self.capacity..]
        } else {
            bytes
        };
        let overflow = (self.buf.len() + bytes.len()).saturating_sub(self.capacity);
        if overflow > 0 {
            self.buf.drain(..overflow);
            self.dropped += overflow as u64;
        }
        self.buf.extend(bytes);
    }

    /// The kept bytes as text, prefixed with a note when the head was dropped.
    pub fn to_text(&self) -> String {
        let (a, b) = self.buf.as_slices();
        let mut bytes = Vec::with_capacity(a.len() + b.len());
        bytes.extend_from_slice(a);
        bytes.extend_from_slice(b);
        let text = String::from_utf8_lossy(&bytes);
        if self.dropped > 0 {
            format!("[gust: {} earlier log bytes dropped]\n{text}", self.dropped)
        } else {
            text.into_owned()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_tail() {
        let mut t = TailBuffer::new(5);
        t.write(b"abc");
        assert_eq!(t.to_text(), "abc");
        t.write(b"defg");
        assert_eq!(t.to_text(), "[gust: 2 earlier log bytes dropped]\ncdefg");
        t.write(b"0123456789");
        assert!(t.to_text().ends_with("56789"));
    }
}
