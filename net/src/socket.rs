//! The UDP socket under the host's endpoint: bound with receive and send buffers large enough
//! for a rack's worth of handshakes arriving at once.

use std::net::{SocketAddr, UdpSocket};

use quinn::udp::{UdpSockRef, UdpSocketState};

/// Socket buffer the host asks for. A thousand workers dialling at once send about 1.2 MB of
/// first packets (and get 3–4 KB each back); with Linux's default 208 KiB, thousands were
/// dropped and their handshakes waited for retransmissions (a 1,000-worker start took 28 s).
/// The kernel caps the request at `net.core.rmem_max`/`wmem_max` (4 MiB here, 208 KiB on a
/// stock Raspberry Pi OS: raise it with `sysctl` for racks of hundreds).
pub const SOCKET_BUFFER: usize = 8 << 20;

/// A UDP socket bound to `addr` with [`SOCKET_BUFFER`]-sized buffers, as far as the kernel
/// allows.
pub fn bind_udp(addr: SocketAddr) -> std::io::Result<UdpSocket> {
    let socket = UdpSocket::bind(addr)?;
    let state = UdpSocketState::new(UdpSockRef::from(&socket))?;
    // Best effort: a smaller buffer still works, it only drops more in a burst.
    let _ = state.set_recv_buffer_size(UdpSockRef::from(&socket), SOCKET_BUFFER);
    let _ = state.set_send_buffer_size(UdpSockRef::from(&socket), SOCKET_BUFFER);
    Ok(socket)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buffers_grow_past_the_default() {
        let socket = bind_udp("127.0.0.1:0".parse().unwrap()).unwrap();
        let state = UdpSocketState::new(UdpSockRef::from(&socket)).unwrap();
        let recv = state.recv_buffer_size(UdpSockRef::from(&socket)).unwrap();
        // Linux doubles what is asked and caps it at rmem_max; the default is 208 KiB.
        let max: usize = std::fs::read_to_string("/proc/sys/net/core/rmem_max")
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(0);
        if max > 212_992 {
            assert!(recv > 212_992 * 2, "receive buffer stayed at {recv}");
        }
    }
}
