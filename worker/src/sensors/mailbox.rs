//! The Raspberry Pi firmware's property mailbox through `/dev/vcio` (what `vcgencmd` itself
//! uses): the only source of all eight throttle bits and of the *measured* ARM clock on every
//! current kernel. Needs read/write access to `/dev/vcio` (group `video` on Pi OS).
//!
//! This is the one module of the workspace allowed `unsafe`: the ioctl hands the kernel the
//! address of our buffer, and nothing else in Rust can make that call.

#![allow(unsafe_code)]

use std::fs::{File, OpenOptions};
use std::path::Path;

use rustix::ioctl::{Updater, ioctl, opcode};

use super::parse::{MBOX_WORDS, mailbox_request, mailbox_response};

/// `IOCTL_MBOX_PROPERTY = _IOWR(100, 0, char *)`: 0xC008_6400 for a 64-bit process,
/// 0xC004_6400 for a 32-bit one.
const IOCTL_MBOX_PROPERTY: rustix::ioctl::Opcode = opcode::read_write::<*mut u8>(100, 0);

/// The buffer must be 16-byte aligned for the firmware.
#[repr(C, align(16))]
struct Buffer([u32; MBOX_WORDS]);

/// An open `/dev/vcio`.
pub(crate) struct Mailbox(File);

impl Mailbox {
    pub(crate) fn open(path: &Path) -> Option<Self> {
        OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
            .ok()
            .map(Self)
    }

    /// Sends one tag with `value`; returns the response values.
    pub(crate) fn property(&self, tag: u32, value: &[u32]) -> Option<Vec<u32>> {
        let mut buf = Buffer(mailbox_request(tag, value));
        // SAFETY: IOCTL_MBOX_PROPERTY takes a pointer to a property buffer whose first word
        // is its size; `buf` is such a buffer (16-byte aligned, size in word 0), it lives for
        // the whole call, and the kernel writes at most that many bytes back into it.
        let updater = unsafe { Updater::<IOCTL_MBOX_PROPERTY, Buffer>::new(&mut buf) };
        // SAFETY: the fd is an open /dev/vcio; the opcode and value type match (above).
        unsafe { ioctl(&self.0, updater) }.ok()?;
        mailbox_response(&buf.0, tag).map(<[u32]>::to_vec)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opcode_matches_the_kernel_header() {
        let expected: u64 = if cfg!(target_pointer_width = "64") {
            0xC008_6400
        } else {
            0xC004_6400
        };
        assert_eq!(IOCTL_MBOX_PROPERTY as u64, expected);
    }

    #[test]
    fn no_device_no_mailbox() {
        assert!(Mailbox::open(Path::new("/nonexistent/dev/vcio")).is_none());
    }
}
