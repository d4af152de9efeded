//! Validation of `[limits]`: the checks `file::Limits` cannot express
//! as types.

use super::{Limits, Validator};

impl Validator<'_> {
    pub(super) fn limits(&mut self, l: &Limits) {
        if l.body_buffer_bytes > l.max_body_bytes {
            self.error("limits.body_buffer_bytes", "must not exceed limits.max_body_bytes");
        }
        // hyper's HTTP/1 parser needs room for its read buffer; 8 KiB is its floor.
        if l.max_header_bytes < 8192 {
            self.error("limits.max_header_bytes", "hyper needs at least 8192");
        }
        for (field, value) in [
            ("limits.header_read_timeout", l.header_read_timeout),
            ("limits.body_read_timeout", l.body_read_timeout),
            ("limits.send_timeout", l.send_timeout),
            ("limits.h2_keep_alive_timeout", l.h2_keep_alive_timeout),
        ] {
            if value.is_zero() {
                self.error(field, "must be greater than 0");
            }
        }
        for (field, value) in [
            ("limits.max_headers", l.max_headers),
            ("limits.max_connections", l.max_connections),
            ("limits.max_connections_per_ip", l.max_connections_per_ip),
            ("limits.h2_max_concurrent_streams", l.h2_max_concurrent_streams as usize),
            ("limits.h2_max_pending_accept_reset_streams", l.h2_max_pending_accept_reset_streams),
            ("limits.h2_max_local_error_reset_streams", l.h2_max_local_error_reset_streams),
            ("limits.h2_max_send_buf_bytes", l.h2_max_send_buf_bytes),
        ] {
            if value == 0 {
                self.error(field, "must be greater than 0");
            }
        }
    }
}
