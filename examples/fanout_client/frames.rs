//! Server frames as the load client reads them once a subscription is
//! confirmed (RFC 6455 §5.2), and the pong it answers pings with.

pub const OPCODE_TEXT: u8 = 0x1;
pub const OPCODE_CLOSE: u8 = 0x8;
pub const OPCODE_PING: u8 = 0x9;

/// A server frame's header (RFC 6455 §5.2): server frames are not masked.
pub struct Frame {
    pub opcode: u8,
    pub header: usize,
    pub len: usize,
}

impl Frame {
    /// The frame at the start of `buf`, once all of it is there.
    pub fn parse(buf: &[u8]) -> Option<Frame> {
        let (&b0, &b1) = (buf.first()?, buf.get(1)?);
        let (header, len) = match b1 & 0x7f {
            126 => (4, u16::from_be_bytes(buf.get(2..4)?.try_into().ok()?) as usize),
            127 => (10, u64::from_be_bytes(buf.get(2..10)?.try_into().ok()?) as usize),
            n => (2, n as usize),
        };
        (buf.len() >= header + len).then_some(Frame { opcode: b0 & 0x0f, header, len })
    }
}

/// A client's pong (masked, as client frames must be) echoing `payload`
/// (at most 125 bytes, as a ping's is).
pub fn pong(payload: &[u8]) -> Vec<u8> {
    let mask = fastrand::u32(..).to_be_bytes();
    let mut frame = vec![0x80 | 0xA, 0x80 | payload.len().min(125) as u8];
    frame.extend_from_slice(&mask);
    frame.extend(payload.iter().take(125).zip(mask.iter().cycle()).map(|(b, m)| b ^ m));
    frame
}
