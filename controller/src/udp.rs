//! The UDP sockets under QUIC, with receive and send buffers sized for a
//! fleet (issue 19, fleet and perf).
//!
//! One socket carries every agent's connection on the controller, and all
//! of an artifact's packets on an agent. The kernel's default buffer
//! (about 208 KiB, some 90 small datagrams) overflowed whenever the
//! endpoint's task was not polled for a few milliseconds: in a reconnect
//! storm of 50,000 agents the lost keep-alives timed connections out, and
//! in a transfer the losses cut the congestion window. The buffers asked
//! for here are capped by the kernel at `net.core.rmem_max` and
//! `net.core.wmem_max` (docs/install.md says when to raise them).
//!
//! The agent compiles this file as its own module.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

/// Bytes of buffer asked for in each direction.
pub const SOCKET_BUFFER: usize = 8 << 20;

/// A UDP socket bound to `addr`, with [`SOCKET_BUFFER`] asked for (a
/// kernel that caps it leaves the socket working with less).
pub fn bind(addr: SocketAddr) -> std::io::Result<std::net::UdpSocket> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    if addr.is_ipv6() {
        // Dual-stack, as quinn's own sockets.
        let _ = socket.set_only_v6(false);
    }
    let _ = socket.set_recv_buffer_size(SOCKET_BUFFER);
    let _ = socket.set_send_buffer_size(SOCKET_BUFFER);
    socket.bind(&addr.into())?;
    Ok(socket.into())
}

/// A QUIC endpoint on such a socket: a server when `server` is given (its
/// sends batched only while a bulk send is under way, [`BulkSend`]), a
/// client otherwise.
pub fn endpoint(addr: SocketAddr, server: Option<quinn::ServerConfig>) -> std::io::Result<quinn::Endpoint> {
    use quinn::Runtime as _;
    let runtime = Arc::new(quinn::TokioRuntime);
    let socket = runtime.wrap_udp_socket(bind(addr)?)?;
    let socket: Arc<dyn quinn::AsyncUdpSocket> =
        if server.is_some() { Arc::new(Batching { inner: socket }) } else { socket };
    quinn::Endpoint::new_with_abstract_socket(quinn::EndpointConfig::default(), server, socket, runtime)
}

/// Bulk sends under way in this process (see [`BulkSend`]).
static BULK_SENDS: AtomicUsize = AtomicUsize::new(0);

/// A bulk send (a blob to an agent) under way, while it lives: the server's
/// socket then lets each connection batch up to quinn's ten datagrams per
/// send (GSO), which a transfer needs for its rate.
///
/// Otherwise one: quinn keeps each connection's send buffer at the largest
/// it ever needed, and the first send of two datagrams (the handshake's)
/// sized it for ten, about 16 KiB of every idle agent's 43 KiB on the
/// controller (issue 19, fleet). An idle connection sends single datagrams
/// after its handshake, so one that connected during a transfer is the
/// only one that keeps the larger buffer.
pub struct BulkSend(());

impl BulkSend {
    pub fn begin() -> Self {
        BULK_SENDS.fetch_add(1, Ordering::Relaxed);
        Self(())
    }
}

impl Drop for BulkSend {
    fn drop(&mut self) {
        BULK_SENDS.fetch_sub(1, Ordering::Relaxed);
    }
}

/// quinn's socket, with batched sends only during a [`BulkSend`].
#[derive(Debug)]
struct Batching {
    inner: Arc<dyn quinn::AsyncUdpSocket>,
}

impl quinn::AsyncUdpSocket for Batching {
    fn create_io_poller(self: Arc<Self>) -> std::pin::Pin<Box<dyn quinn::UdpPoller>> {
        self.inner.clone().create_io_poller()
    }

    fn try_send(&self, transmit: &quinn::udp::Transmit) -> std::io::Result<()> {
        self.inner.try_send(transmit)
    }

    fn poll_recv(
        &self,
        cx: &mut std::task::Context,
        bufs: &mut [std::io::IoSliceMut<'_>],
        meta: &mut [quinn::udp::RecvMeta],
    ) -> std::task::Poll<std::io::Result<usize>> {
        self.inner.poll_recv(cx, bufs, meta)
    }

    fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.inner.local_addr()
    }

    fn max_transmit_segments(&self) -> usize {
        if BULK_SENDS.load(Ordering::Relaxed) > 0 { self.inner.max_transmit_segments() } else { 1 }
    }

    fn max_receive_segments(&self) -> usize {
        self.inner.max_receive_segments()
    }

    fn may_fragment(&self) -> bool {
        self.inner.may_fragment()
    }
}

/// Flow-control windows: how many bytes a peer may send ahead of what was
/// read, on one stream and on the whole connection. quinn's defaults
/// (1.25 MB a stream, sized for 100 Mbit/s at 100 ms, and no bound on the
/// connection) let a transfer on a fast link stall whenever its reader
/// was not scheduled for a millisecond; these absorb such pauses at a
/// gigabyte a second (issue 19, perf). The connection's bound is also the
/// most one agent's uploads may hold in the controller's memory.
pub struct Windows {
    pub stream: u32,
    pub connection: u32,
}

/// The controller's, for each agent's uploads.
pub const CONTROLLER_WINDOWS: Windows = Windows { stream: 4 << 20, connection: 8 << 20 };
/// An agent's, for its downloads.
pub const AGENT_WINDOWS: Windows = Windows { stream: 8 << 20, connection: 16 << 20 };

impl Windows {
    pub fn apply(&self, transport: &mut quinn::TransportConfig) {
        transport.stream_receive_window(self.stream.into());
        transport.receive_window(self.connection.into());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What the kernel granted a socket: (receive, send) bytes.
    fn buffers(socket: &std::net::UdpSocket) -> std::io::Result<(usize, usize)> {
        let socket = socket2::SockRef::from(socket);
        Ok((socket.recv_buffer_size()?, socket.send_buffer_size()?))
    }

    #[test]
    fn the_socket_gets_more_than_the_kernels_default_where_allowed() {
        let socket = bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let (recv, send) = buffers(&socket).unwrap();
        let max = |name: &str| {
            std::fs::read_to_string(format!("/proc/sys/net/core/{name}")).ok().and_then(|v| v.trim().parse::<usize>().ok())
        };
        // Linux reports twice what was set (its bookkeeping), up to the cap.
        if let (Some(rmax), Some(wmax)) = (max("rmem_max"), max("wmem_max")) {
            assert!(recv >= SOCKET_BUFFER.min(rmax), "receive buffer {recv}, cap {rmax}");
            assert!(send >= SOCKET_BUFFER.min(wmax), "send buffer {send}, cap {wmax}");
        }
        // And it carries datagrams.
        let peer = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        peer.send_to(b"ping", socket.local_addr().unwrap()).unwrap();
        let mut buf = [0u8; 8];
        let (n, _) = socket.recv_from(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"ping");
    }
}
