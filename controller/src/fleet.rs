//! The fleet endpoint: QUIC with mutual TLS on one UDP port.
//!
//! Two ALPNs share the port: `sluice-enroll/1` (no client certificate; one
//! stream carrying an enrollment request) and `sluice/1` (client
//! certificate required; one control stream of frames, plus one stream per
//! plugin or artifact transfer). This module moves bytes and translates
//! frames into [`Command`]s for the driver; it holds no engine state.
//! Transfers go straight to the blob stores, streamed, never whole in memory.

use crate::blobs::BlobStore;
use crate::driver::command::{Command, Transfer};
use crate::driver::link::{AGENT_QUEUE, AgentSender};
use anyhow::{Context as _, Result, bail};
use sluice_protocol::{
    ALPN_ENROLL, ALPN_FLEET, EnrollRequest, EnrollResponse, FrameDecoder, FromAgent, MAX_FRAME, PROTOCOL_VERSION,
    StreamReply, StreamRequest, ToAgent, encode,
};

use std::sync::atomic::{AtomicU64, Ordering};
use tokio::io::AsyncReadExt as _;
use tokio::sync::{mpsc, oneshot};
use tracing::{Instrument, debug, info, info_span, warn};

#[derive(Clone)]
pub struct FleetContext {
    pub driver: mpsc::Sender<Command>,
    pub artifacts: BlobStore,
    pub plugins: BlobStore,
    /// Artifact bytes in and out (issue 17, obs).
    pub metrics: std::sync::Arc<crate::metrics::Metrics>,
}

static CONNECTION_IDS: AtomicU64 = AtomicU64::new(1);

/// Bytes read from a blob file at a time when sending it.
const SEND_BUFFER: usize = 1 << 20;

/// The longest an enrollment may take, from handshake to answer.
const ENROLL_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(20);

// Fleet (issue 19, scale).
/// Bidirectional streams a connection may open before its hello: the
/// control stream or the enrollment stream, with room for a retry.
pub const HANDSHAKE_STREAMS: u32 = 4;
/// Streams a connected agent may have open at once: its control stream and
/// a few to spare, and per slot one job's log stream and its transfers
/// (an artifact or plugin each), up to the 256 every agent had before the
/// limit followed its slots.
fn agent_streams(slots: u32) -> u32 {
    8u32.saturating_add(slots.saturating_mul(4)).min(256)
}

/// Accepts connections until the endpoint closes.
pub async fn serve(endpoint: quinn::Endpoint, ctx: FleetContext) {
    while let Some(incoming) = endpoint.accept().await {
        let ctx = ctx.clone();
        let remote = incoming.remote_address();
        tokio::spawn(
            async move {
                if let Err(e) = handle_connection(incoming, ctx).await {
                    warn!("connection refused or failed: {e:#}");
                }
            }
            .instrument(info_span!("fleet", %remote)),
        );
    }
}

async fn handle_connection(incoming: quinn::Incoming, ctx: FleetContext) -> Result<()> {
    // A handshake failure (unknown CA, expired certificate) ends here, with
    // rustls's reason in the log.
    let conn = incoming.await.context("TLS handshake failed")?;
    let alpn = conn
        .handshake_data()
        .and_then(|d| d.downcast::<quinn::crypto::rustls::HandshakeData>().ok())
        .and_then(|d| d.protocol)
        .unwrap_or_default();
    if alpn == ALPN_ENROLL {
        // Enrollment is unauthenticated: bound it so that idle connections
        // cannot pile up.
        return match tokio::time::timeout(ENROLL_TIMEOUT, enroll(conn.clone(), ctx)).await {
            Ok(result) => result,
            Err(_) => {
                conn.close(1u32.into(), b"enrollment timed out");
                bail!("enrollment timed out after {}s", ENROLL_TIMEOUT.as_secs())
            }
        };
    }
    if alpn != ALPN_FLEET {
        conn.close(1u32.into(), b"unknown protocol");
        bail!("unknown ALPN {:?}", String::from_utf8_lossy(&alpn));
    }
    let Some(agent_id) = conn
        .peer_identity()
        .and_then(|id| id.downcast::<Vec<rustls::pki_types::CertificateDer<'static>>>().ok())
        .and_then(|chain| chain.first().map(|leaf| crate::ca::agent_id_from_cert(leaf)))
        .transpose()?
    else {
        conn.close(1u32.into(), b"client certificate required");
        bail!("fleet connection without a client certificate");
    };
    serve_agent(conn, agent_id, ctx).await
}

async fn enroll(conn: quinn::Connection, ctx: FleetContext) -> Result<()> {
    let (mut send, mut recv) = conn.accept_bi().await.context("waiting for the enrollment request")?;
    let request: EnrollRequest = read_frame_exact(&mut recv).await?.context("enrollment stream ended early")?;
    let response = if request.protocol_version != PROTOCOL_VERSION {
        EnrollResponse::Refused {
            reason: format!(
                "protocol version mismatch: agent speaks {}, controller speaks {PROTOCOL_VERSION}",
                request.protocol_version
            ),
        }
    } else {
        let (tx, rx) = oneshot::channel();
        let source = conn.remote_address();
        ctx.driver.send(Command::Enroll { request: Box::new(request), source, reply: tx }).await?;
        rx.await?
    };
    if let EnrollResponse::Refused { reason } = &response {
        warn!(%reason, "enrollment refused");
    }
    send.write_all(&encode(&response)?).await?;
    send.finish()?;
    // Let the agent read the answer before the connection goes.
    let _ = tokio::time::timeout(std::time::Duration::from_secs(5), conn.closed()).await;
    Ok(())
}

/// Bytes of queued messages the writer of an agent's control stream takes
/// into one write at most.
const WRITE_BATCH: usize = 64 << 10;

async fn serve_agent(conn: quinn::Connection, agent_id: String, ctx: FleetContext) -> Result<()> {
    let conn_id = CONNECTION_IDS.fetch_add(1, Ordering::Relaxed);
    let span = info_span!("agent", %agent_id);
    let (mut send, mut recv) = conn.accept_bi().await.context("waiting for the control stream")?;
    let mut decoder = FrameDecoder::new();
    let Some(FromAgent::Hello(hello)) = read_frame(&mut recv, &mut decoder).await? else {
        bail!("agent {agent_id} did not start with hello");
    };
    // Fleet (issue 19, scale): room for the streams its slots may use.
    conn.set_max_concurrent_bi_streams(agent_streams(hello.slots).into());
    let (tx, mut rx) = mpsc::channel::<Vec<ToAgent>>(AGENT_QUEUE);
    let tx = AgentSender::new(tx, conn.clone(), &agent_id, crate::driver::now_ms());
    let link = tx.clone();
    let (reply_tx, reply_rx) = oneshot::channel();
    let source = conn.remote_address();
    ctx.driver
        .send(Command::AgentConnected { agent_id: agent_id.clone(), conn_id, hello, source, tx, reply: reply_tx })
        .await?;
    let welcome = reply_rx.await?;
    send.write_all(&encode(&welcome)?).await?;
    if let ToAgent::Refused { reason } = welcome {
        let _ = send.finish();
        let _ = tokio::time::timeout(std::time::Duration::from_secs(2), conn.closed()).await;
        bail!("agent {agent_id} refused: {reason}");
    }
    span.in_scope(|| info!(remote = %conn.remote_address(), "agent connected"));

    let writer_conn = conn.clone();
    let writer = tokio::spawn(async move {
        let mut bytes = Vec::new();
        while let Some(first) = rx.recv().await {
            // Messages sent together, and whatever else is queued already,
            // go in one write (issue 19): one wake of quinn's connection
            // task, and one packet for a result's acknowledgement and the
            // next job, which as two writes often left as two packets (and
            // the agent's ACK of them as a third).
            bytes.clear();
            let mut next = Some(first);
            let mut refused = None;
            'writes: while let Some(messages) = next.take() {
                for message in messages {
                    match encode(&message) {
                        Ok(frame) => bytes.extend_from_slice(&frame),
                        Err(e) => warn!("cannot encode a message for the agent: {e}"),
                    }
                    // A refusal ends the connection (e.g. the agent was
                    // disabled): nothing after it is written.
                    if let ToAgent::Refused { reason } = message {
                        refused = Some(reason);
                        break 'writes;
                    }
                }
                if bytes.len() < WRITE_BATCH {
                    next = rx.try_recv().ok();
                }
            }
            if !bytes.is_empty() && send.write_all(&bytes).await.is_err() {
                break;
            }
            if let Some(reason) = refused {
                let _ = send.finish();
                let _ = tokio::time::timeout(std::time::Duration::from_secs(2), send.stopped()).await;
                writer_conn.close(2u32.into(), reason.as_bytes());
                break;
            }
        }
    });
    let streams = {
        let conn = conn.clone();
        let ctx = ctx.clone();
        let stream_agent = agent_id.clone();
        tokio::spawn(async move {
            while let Ok((send, recv)) = conn.accept_bi().await {
                let ctx = ctx.clone();
                let agent_id = stream_agent.clone();
                tokio::spawn(async move {
                    if let Err(e) = serve_transfer(send, recv, &ctx, &agent_id, conn_id).await {
                        debug!("transfer failed: {e:#}");
                    }
                });
            }
        })
    };
    let result = async {
        loop {
            match read_frame::<FromAgent>(&mut recv, &mut decoder).await {
                Ok(Some(message)) => {
                    link.hear(crate::driver::now_ms());
                    // An idle agent's heartbeat renews nothing: it is
                    // answered here, and the driver reads when it was
                    // heard (issue 19, fleet: 50,000 agents send 10,000
                    // a second).
                    if matches!(&message, FromAgent::Heartbeat { running } if running.is_empty()) {
                        link.send(ToAgent::HeartbeatAck);
                        continue;
                    }
                    ctx.driver.send(Command::AgentMessage { agent_id: agent_id.clone(), conn_id, message }).await?;
                }
                Ok(None) => return Ok(()),
                Err(e) => return Err(e),
            }
        }
    }
    .instrument(span.clone())
    .await;
    writer.abort();
    streams.abort();
    conn.close(0u32.into(), b"bye");
    let _ = ctx.driver.send(Command::AgentDisconnected { agent_id: agent_id.clone(), conn_id }).await;
    span.in_scope(|| info!("agent disconnected"));
    result
}

async fn serve_transfer(
    mut send: quinn::SendStream,
    mut recv: quinn::RecvStream,
    ctx: &FleetContext,
    agent_id: &str,
    conn_id: u64,
) -> Result<()> {
    let request: StreamRequest = read_frame_exact(&mut recv).await?.context("transfer stream ended early")?;
    let transfer = match &request {
        StreamRequest::Logs { .. } => None,
        StreamRequest::FetchPlugin { digest } => Some(Transfer::FetchPlugin { digest: digest.clone() }),
        StreamRequest::FetchArtifact { digest, .. } => Some(Transfer::FetchArtifact { digest: digest.clone() }),
        StreamRequest::UploadOffset { digest, size } | StreamRequest::PutArtifact { digest, size, .. } => {
            Some(Transfer::Upload { digest: digest.clone(), size: *size })
        }
    };
    // Only what the agent's jobs need moves; the driver keeps the books.
    // (Log lines are checked one by one, as those of the control stream.)
    if let Some(transfer) = transfer {
        let (tx, rx) = oneshot::channel();
        ctx.driver.send(Command::AuthorizeTransfer { agent_id: agent_id.to_string(), conn_id, transfer, reply: tx }).await?;
        if let Err(message) = rx.await? {
            let _ = recv.stop(1u32.into());
            send.write_all(&encode(&StreamReply::Error { message: message.clone() })?).await?;
            send.finish()?;
            let _ = send.stopped().await;
            bail!("transfer refused: {message}");
        }
    }
    match request {
        StreamRequest::Logs { job_id } => {
            // Each line goes to the driver as the control stream's would;
            // the answer comes once all of them are queued there, ahead of
            // the result the agent sends next.
            let mut decoder = FrameDecoder::new();
            let mut lines = 0u64;
            loop {
                match read_frame::<FromAgent>(&mut recv, &mut decoder).await? {
                    Some(message @ FromAgent::Log { .. }) => {
                        if !matches!(&message, FromAgent::Log { job_id: j, .. } if *j == job_id) {
                            bail!("log stream of job {job_id} carried another job's line");
                        }
                        lines += 1;
                        ctx.driver.send(Command::AgentMessage { agent_id: agent_id.to_string(), conn_id, message }).await?;
                    }
                    Some(other) => bail!("log stream of job {job_id} carried {other:?}"),
                    None => break,
                }
            }
            send.write_all(&encode(&StreamReply::Ok { size: lines })?).await?;
            send.finish()?;
            let _ = send.stopped().await;
            Ok(())
        }
        StreamRequest::FetchPlugin { digest } => send_blob(&ctx.plugins, &digest, 0, &mut send).await.map(|_| ()),
        StreamRequest::FetchArtifact { digest, offset } => {
            let sent = send_blob(&ctx.artifacts, &digest, offset, &mut send).await?;
            ctx.metrics.artifact_bytes_out.add(sent);
            Ok(())
        }
        StreamRequest::UploadOffset { digest, size } => {
            let reply = match ctx.artifacts.upload_offset(&digest, size).await {
                Ok(have) => StreamReply::Ok { size: have },
                Err(e) => StreamReply::Error { message: format!("{e:#}") },
            };
            send.write_all(&encode(&reply)?).await?;
            send.finish()?;
            let _ = send.stopped().await;
            Ok(())
        }
        StreamRequest::PutArtifact { digest, size, offset } => {
            let reply = match ctx.artifacts.put_stream(&digest, size, offset, &mut recv).await {
                Ok(()) => {
                    ctx.metrics.artifact_bytes_in.add(size.saturating_sub(offset));
                    StreamReply::Ok { size }
                }
                Err(e) => StreamReply::Error { message: format!("{e:#}") },
            };
            send.write_all(&encode(&reply)?).await?;
            send.finish()?;
            let _ = send.stopped().await;
            Ok(())
        }
    }
}

/// Sends a blob's size, then its bytes from `offset` on; returns how many
/// bytes of it were sent.
async fn send_blob(store: &BlobStore, digest: &str, offset: u64, send: &mut quinn::SendStream) -> Result<u64> {
    let _bulk = crate::udp::BulkSend::begin();
    let mut sent = 0u64;
    // A local blob: read ahead on a thread, each chunk sent as read.
    match store.read_ahead(digest, offset, SEND_BUFFER).await {
        Ok(Some((mut chunks, size))) => {
            send.write_all(&encode(&StreamReply::Ok { size })?).await?;
            while let Some(chunk) = chunks.recv().await {
                let chunk = chunk.context("reading blob")?;
                sent += chunk.len() as u64;
                send.write_chunk(chunk).await.context("sending blob")?;
            }
            send.finish()?;
            let _ = send.stopped().await;
            return Ok(sent);
        }
        Ok(None) => {}
        Err(e) => {
            send.write_all(&encode(&StreamReply::Error { message: format!("{e:#}") })?).await?;
            send.finish()?;
            let _ = send.stopped().await;
            return Ok(0);
        }
    }
    // From object storage (issue 18, s3) the bytes stream from the bucket;
    // read from the start they are checked against the digest on the way,
    // and a mismatch resets the stream (the agent checks the digest too).
    match store.open_blob(digest, offset).await {
        Ok((mut file, size)) => {
            send.write_all(&encode(&StreamReply::Ok { size })?).await?;
            let mut buf = vec![0u8; SEND_BUFFER];
            loop {
                let n = file.read(&mut buf).await.context("reading blob")?;
                if n == 0 {
                    break;
                }
                send.write_all(&buf[..n]).await.context("sending blob")?;
                sent += n as u64;
            }
        }
        Err(e) => send.write_all(&encode(&StreamReply::Error { message: format!("{e:#}") })?).await?,
    }
    send.finish()?;
    let _ = send.stopped().await;
    Ok(sent)
}

/// Reads one frame with exact reads, so that raw bytes after it stay in
/// the stream. `None` when the stream ended cleanly before a frame.
pub async fn read_frame_exact<T: for<'de> serde::Deserialize<'de>>(recv: &mut quinn::RecvStream) -> Result<Option<T>> {
    let mut len = [0u8; 4];
    match recv.read_exact(&mut len).await {
        Ok(()) => {}
        Err(quinn::ReadExactError::FinishedEarly(0)) => return Ok(None),
        Err(e) => return Err(e.into()),
    }
    let n = u32::from_be_bytes(len) as usize;
    if n > MAX_FRAME {
        bail!("frame of {n} bytes exceeds the limit of {MAX_FRAME} bytes");
    }
    let mut body = vec![0u8; n];
    recv.read_exact(&mut body).await?;
    let mut decoder = FrameDecoder::new();
    decoder.push(&len);
    decoder.push(&body);
    Ok(decoder.next_frame()?)
}

/// Reads the next frame of a stream of frames.
async fn read_frame<T: for<'de> serde::Deserialize<'de>>(
    recv: &mut quinn::RecvStream,
    decoder: &mut FrameDecoder,
) -> Result<Option<T>> {
    loop {
        if let Some(frame) = decoder.next_frame()? {
            return Ok(Some(frame));
        }
        // Chunks are quinn's own buffers: an idle agent holds no read
        // buffer of ours while it waits.
        match recv.read_chunk(MAX_FRAME, true).await? {
            Some(chunk) => decoder.push(&chunk.bytes),
            None => return Ok(None),
        }
    }
}
