//! Messages between the controller and its agents, and how they are framed.
//!
//! Pure: this crate knows nothing of sockets, tokio, quinn or clocks. Both
//! sides turn bytes into [`Frame`]s with [`encode`] and [`FrameDecoder`];
//! the drivers in `controller` and `agent` move the bytes.
//!
//! Wire format: every frame is a 4-byte big-endian length followed by that
//! many bytes of postcard. Frames are bounded by [`MAX_FRAME`] so a peer can
//! never make the other side allocate without limit.

pub mod metrics;

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Bumped on every incompatible change of the messages below.
pub const PROTOCOL_VERSION: u32 = 6;
/// ALPN of the mutual-TLS fleet connection.
pub const ALPN_FLEET: &[u8] = b"sluice/1";
/// ALPN of the one-shot enrollment connection (server-authenticated only).
pub const ALPN_ENROLL: &[u8] = b"sluice-enroll/1";
/// The DNS name in the controller's server certificate; agents verify it
/// whatever address they dial, so a controller can move hosts.
pub const CONTROLLER_SERVER_NAME: &str = "sluice-controller";
// Several controllers, one leader (issue 18, reach).
/// QUIC application error code with which a controller that is not the
/// leader closes an agent's connection (fleet and enrollment alike) right
/// after the handshake; the reason is [`not_leader_reason`]'s text. Agents
/// then try the leader it names first, else their other addresses. ASCII
/// "SLDR".
pub const NOT_LEADER_CODE: u32 = 0x534c_4452;
/// The start of a [`NOT_LEADER_CODE`] close's reason.
pub const NOT_LEADER_REASON: &str = "not the leader";

/// The reason a standby closes an agent's connection with: `"not the
/// leader; leader is ADDR"` (ADDR: the leader's fleet address, as agents
/// dial it), or `"not the leader; no leader"` while there is none.
pub fn not_leader_reason(leader: Option<&str>) -> String {
    match leader.map(str::trim).filter(|l| !l.is_empty()) {
        Some(addr) => format!("{NOT_LEADER_REASON}; leader is {addr}"),
        None => format!("{NOT_LEADER_REASON}; no leader"),
    }
}

/// What a [`NOT_LEADER_CODE`] close's reason says: `Some(Some(addr))` for
/// the leader's fleet address, `Some(None)` for "no leader now", `None` if
/// the text is no such refusal. An address is at most 255 bytes of
/// printable ASCII without spaces or commas (it is dialed, never shown
/// raw), anything else counts as no leader named.
pub fn parse_not_leader(reason: &[u8]) -> Option<Option<String>> {
    let text = std::str::from_utf8(reason).ok()?;
    let rest = text.strip_prefix(NOT_LEADER_REASON)?;
    let addr = rest.strip_prefix("; leader is ").map(str::trim);
    Some(
        addr.filter(|a| !a.is_empty() && a.len() <= 255 && a.bytes().all(|b| b.is_ascii_graphic() && b != b','))
            .map(str::to_string),
    )
}
/// Upper bound of one encoded frame. Logs and artifacts never travel in one
/// frame (logs are chunked, artifacts use raw streams), so 1 MiB is ample.
pub const MAX_FRAME: usize = 1 << 20;
/// Bytes of one log chunk sent by an agent; keeps frames far below MAX_FRAME.
pub const LOG_CHUNK: usize = 16 * 1024;

/// Errors from decoding frames.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FrameError {
    #[error("frame of {0} bytes exceeds the limit of {MAX_FRAME} bytes")]
    TooLarge(usize),
    #[error("malformed frame: {0}")]
    Malformed(String),
}

/// Encodes one message as a length-prefixed frame.
pub fn encode<T: Serialize>(message: &T) -> Result<Vec<u8>, FrameError> {
    let mut out = postcard::to_extend(message, vec![0u8; 4]).map_err(|e| FrameError::Malformed(e.to_string()))?;
    let len = out.len() - 4;
    if len > MAX_FRAME {
        return Err(FrameError::TooLarge(len));
    }
    out[..4].copy_from_slice(&(len as u32).to_be_bytes());
    Ok(out)
}

/// Accumulates bytes from a stream and yields whole frames.
#[derive(Default)]
pub struct FrameDecoder {
    buf: Vec<u8>,
}

impl FrameDecoder {
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends bytes read from the stream.
    pub fn push(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// How many more bytes the next frame needs at least (for readers that
    /// want exact reads); 0 when a whole frame is buffered.
    pub fn needed(&self) -> usize {
        if self.buf.len() < 4 {
            return 4 - self.buf.len();
        }
        let len = u32::from_be_bytes(self.buf[..4].try_into().expect("4 bytes")) as usize;
        (4 + len).saturating_sub(self.buf.len())
    }

    /// The next complete frame, if one is buffered. A length over
    /// [`MAX_FRAME`] is an error before any of the body is read.
    pub fn next_frame<T: for<'de> Deserialize<'de>>(&mut self) -> Result<Option<T>, FrameError> {
        if self.buf.len() < 4 {
            return Ok(None);
        }
        let len = u32::from_be_bytes(self.buf[..4].try_into().expect("4 bytes")) as usize;
        if len > MAX_FRAME {
            return Err(FrameError::TooLarge(len));
        }
        if self.buf.len() < 4 + len {
            return Ok(None);
        }
        let message = postcard::from_bytes(&self.buf[4..4 + len]).map_err(|e| FrameError::Malformed(e.to_string()));
        self.buf.drain(..4 + len);
        message.map(Some)
    }
}

/// Capabilities granted to one action (the pipeline's grant intersected with
/// what the plugin declares; the agent applies its own policy on top).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Grants {
    pub exec: Vec<String>,
    pub http: Vec<String>,
    pub secrets: Vec<String>,
    pub env: Vec<String>,
    pub fs: Vec<String>,
    /// TCP ports the action's host programs may use (`tcp:PORT`,
    /// `tcp-bind:PORT`, `*` for any port); none when empty.
    #[serde(default)]
    pub net: Vec<String>,
}

/// A plugin as the controller stores it: fetched by digest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PluginRef {
    pub provider: String,
    pub version: String,
    /// Hex sha256 of the component bytes.
    pub digest: String,
    /// The publisher's detached signature of the component (the `.sig`
    /// document pushed with it), verbatim. An agent checks it with the keys
    /// of its own policy, never trusting the controller's word.
    pub signature: Option<String>,
    /// The trusted publisher the controller found for the signature: for
    /// logs only.
    pub publisher: Option<String>,
}

/// An input artifact of a job: a content-addressed tar archive.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InputArtifact {
    pub name: String,
    pub digest: String,
    pub size: u64,
}

/// An output artifact a job must produce.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutputSpec {
    pub name: String,
    pub files: Vec<String>,
}

/// One action attempt, handed to an agent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobSpec {
    pub job_id: String,
    /// Increases every time the controller hands this action out again; a
    /// result with an older epoch is refused.
    pub lease_epoch: u64,
    pub pipeline: String,
    pub execution_id: String,
    pub stage: String,
    pub action: String,
    pub attempt: u32,
    pub plugin: PluginRef,
    pub configuration: Vec<(String, String)>,
    pub variables: Vec<(String, String)>,
    pub inputs: Vec<InputArtifact>,
    pub outputs: Vec<OutputSpec>,
    pub grants: Grants,
    /// Values of the granted secrets that are set (name, value).
    pub secrets: Vec<(String, String)>,
    pub timeout_ms: u64,
}

/// Asks a source plugin for its newest revision (change detection).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PollSpec {
    pub poll_id: String,
    pub pipeline: String,
    pub action: String,
    pub plugin: PluginRef,
    pub configuration: Vec<(String, String)>,
    pub grants: Grants,
    pub secrets: Vec<(String, String)>,
    pub timeout_ms: u64,
}

/// A source's newest revision, as `latest-revision` reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PolledRevision {
    pub id: String,
    pub summary: String,
    pub created: Option<u64>,
}

/// An output artifact an agent uploaded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProducedArtifact {
    pub name: String,
    pub digest: String,
    pub size: u64,
}

/// How an action attempt ended on the agent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum JobResult {
    Succeeded {
        summary: String,
        output_variables: BTreeMap<String, String>,
        external_url: Option<String>,
        outputs: Vec<ProducedArtifact>,
    },
    Failed {
        message: String,
        retryable: bool,
    },
}

/// First frame on the control stream, agent to controller.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hello {
    pub protocol_version: u32,
    pub agent_version: String,
    pub labels: BTreeMap<String, String>,
    pub slots: u32,
    /// Jobs the agent is still running, e.g. after a reconnect.
    pub running: Vec<String>,
    /// Digests of the plugins the agent has cached: the controller prefers
    /// it for their actions, among agents equally loaded.
    pub plugins: Vec<String>,
    /// Random per start of the agent process: a reconnect with the same
    /// value is the same process, which cannot have lost a job it was
    /// running (one it does not list never reached it).
    pub instance: u64,
}

/// Controller to agent, on the control stream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ToAgent {
    Welcome {
        agent_id: String,
        heartbeat_ms: u64,
    },
    Refused {
        reason: String,
    },
    Job(Box<JobSpec>),
    Cancel {
        job_id: String,
    },
    /// Run the source plugin's `latest-revision`; answered by
    /// [`FromAgent::PollResult`]. Takes no slot.
    Poll(Box<PollSpec>),
    HeartbeatAck,
    /// The controller has durably taken the job's result: the agent may
    /// forget it. Until then the agent reports the job in `Hello.running`
    /// and sends its result again after a reconnect.
    ResultAck {
        job_id: String,
    },
    /// A renewed certificate for the agent's new key (answer to
    /// [`FromAgent::RenewCertificate`]).
    Renewed {
        cert_pem: String,
    },
    RenewalRefused {
        reason: String,
    },
    /// The controller has durably taken the job's log up to `seq`: the
    /// agent may forget those lines. Lines not acknowledged are sent again
    /// after a reconnect; the controller drops the ones it has.
    LogAck {
        job_id: String,
        seq: u64,
    },
}

/// Agent to controller, on the control stream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum FromAgent {
    Hello(Hello),
    Heartbeat {
        running: Vec<String>,
    },
    JobStarted {
        job_id: String,
        lease_epoch: u64,
    },
    Log {
        job_id: String,
        seq: u64,
        text: String,
    },
    JobFinished {
        job_id: String,
        lease_epoch: u64,
        result: JobResult,
    },
    /// Asks for a new certificate before the current one expires; the CSR
    /// carries a fresh key. Sent on the authenticated control stream, so
    /// the controller knows whose certificate it renews.
    RenewCertificate {
        csr_pem: String,
    },
    PollResult {
        poll_id: String,
        result: Result<PolledRevision, String>,
    },
}

/// First frame of every other bidirectional stream an agent opens.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum StreamRequest {
    /// Controller answers with a [`StreamReply`] then the raw bytes.
    FetchPlugin { digest: String },
    /// Controller answers with a [`StreamReply`] (the whole size) then the
    /// raw bytes from `offset` on: a download cut off goes on where it
    /// stopped.
    FetchArtifact { digest: String, offset: u64 },
    /// Raw bytes from `offset` on follow until the agent finishes the
    /// stream; the controller verifies size and digest of the whole, stores,
    /// then answers with a [`StreamReply`]. `offset` is what
    /// [`StreamRequest::UploadOffset`] answered.
    PutArtifact { digest: String, size: u64, offset: u64 },
    /// How much of an artifact the controller already has: the whole size
    /// when it is stored, the bytes of an upload cut off earlier, or 0. The
    /// answer is a [`StreamReply::Ok`] with that number as `size`.
    UploadOffset { digest: String, size: u64 },
    /// The stream of one job's log: [`FromAgent::Log`] frames of that job
    /// follow until the agent finishes the stream, after the job's last
    /// line and before it reports the result. The controller answers with
    /// [`StreamReply::Ok`] (`size`: lines received) once every line has
    /// reached it, so a result never overtakes its log.
    Logs { job_id: String },
}

/// Answer to a [`StreamRequest`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum StreamReply {
    Ok { size: u64 },
    Error { message: String },
}

/// Enrollment, agent to controller, on the `sluice-enroll/1` connection.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EnrollRequest {
    pub protocol_version: u32,
    /// The secret part of the join token.
    pub secret: String,
    pub csr_pem: String,
    pub hostname: String,
}

/// Enrollment answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum EnrollResponse {
    Enrolled { agent_id: String, cert_pem: String, ca_pem: String, labels: BTreeMap<String, String> },
    Refused { reason: String },
}

/// A join token as the operator passes it around:
/// `sjt1.<ca sha256 hex>.<secret>`. The fingerprint lets the agent trust the
/// controller on first contact; only a hash of the secret is stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JoinToken {
    pub ca_fingerprint: String,
    pub secret: String,
}

impl JoinToken {
    const PREFIX: &'static str = "sjt1";

    pub fn parse(text: &str) -> Result<Self, String> {
        let mut parts = text.trim().splitn(3, '.');
        let (Some(prefix), Some(fp), Some(secret)) = (parts.next(), parts.next(), parts.next()) else {
            return Err("join token is malformed: expected sjt1.<fingerprint>.<secret>".into());
        };
        if prefix != Self::PREFIX {
            return Err(format!("join token has unknown format {prefix:?}: expected sjt1"));
        }
        if fp.len() != 64 || !fp.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err("join token is malformed: the CA fingerprint is not 64 hex digits".into());
        }
        if secret.len() < 16 {
            return Err("join token is malformed: the secret is too short".into());
        }
        Ok(Self { ca_fingerprint: fp.to_ascii_lowercase(), secret: secret.to_string() })
    }
}

impl std::fmt::Display for JoinToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}.{}", Self::PREFIX, self.ca_fingerprint, self.secret)
    }
}

/// Drives the decoder the way the controller and the agent read a control
/// stream: bytes arrive in pieces, frames are taken while they decode, and
/// the first error ends the stream. Shared by the property test below and
/// the cargo-fuzz target in `protocol/fuzz`; whatever the bytes, it must
/// return without panicking.
#[cfg(any(test, feature = "fuzzing"))]
pub mod fuzzing {
    use super::*;

    /// Feeds `bytes` in pieces of `piece` bytes (at least 1) and decodes
    /// frames of type `T`; returns how many decoded before the stream ended
    /// or failed.
    pub fn decode_stream<T: for<'de> Deserialize<'de>>(bytes: &[u8], piece: usize) -> usize {
        let mut decoder = FrameDecoder::new();
        let mut frames = 0;
        for chunk in bytes.chunks(piece.max(1)) {
            decoder.push(chunk);
            loop {
                match decoder.next_frame::<T>() {
                    Ok(Some(_)) => frames += 1,
                    Ok(None) => break,
                    Err(_) => return frames,
                }
            }
        }
        frames
    }

    /// Every message type a peer decodes, over the same bytes.
    pub fn decode_every_message(bytes: &[u8], piece: usize) {
        decode_stream::<FromAgent>(bytes, piece);
        decode_stream::<ToAgent>(bytes, piece);
        decode_stream::<StreamRequest>(bytes, piece);
        decode_stream::<StreamReply>(bytes, piece);
        decode_stream::<EnrollRequest>(bytes, piece);
        decode_stream::<EnrollResponse>(bytes, piece);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip_across_arbitrary_splits() {
        let messages = vec![
            FromAgent::Hello(Hello {
                protocol_version: PROTOCOL_VERSION,
                agent_version: "0.1.0".into(),
                labels: [("os".to_string(), "linux".to_string())].into(),
                slots: 2,
                running: vec![],
                plugins: vec![],
                instance: 1,
            }),
            FromAgent::Log { job_id: "j".into(), seq: 7, text: "hello\n".into() },
            FromAgent::Heartbeat { running: vec!["a".into()] },
        ];
        let mut bytes = Vec::new();
        for m in &messages {
            bytes.extend(encode(m).unwrap());
        }
        for split in 1..bytes.len() {
            let mut decoder = FrameDecoder::new();
            let mut got = Vec::new();
            for chunk in bytes.chunks(split) {
                decoder.push(chunk);
                while let Some(m) = decoder.next_frame::<FromAgent>().unwrap() {
                    got.push(m);
                }
            }
            assert_eq!(got, messages, "split {split}");
            assert_eq!(decoder.needed(), 4);
        }
    }

    #[test]
    fn oversized_frame_is_refused_before_its_body_arrives() {
        let mut decoder = FrameDecoder::new();
        decoder.push(&((MAX_FRAME as u32) + 1).to_be_bytes());
        assert_eq!(decoder.next_frame::<FromAgent>(), Err(FrameError::TooLarge(MAX_FRAME + 1)));
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        let mut decoder = FrameDecoder::new();
        decoder.push(&[0, 0, 0, 3, 0xff, 0xff, 0xff]);
        assert!(matches!(decoder.next_frame::<ToAgent>(), Err(FrameError::Malformed(_))));
    }

    /// xorshift64*: deterministic randomness for the property test, so a
    /// failure names its seed and replays exactly.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
        }
        fn below(&mut self, n: usize) -> usize {
            (self.next() % n.max(1) as u64) as usize
        }
    }

    /// Valid frames of every kind, the seeds of the mutations.
    fn corpus() -> Vec<Vec<u8>> {
        let job = JobSpec {
            job_id: "e.1.0.1".into(),
            lease_epoch: 3,
            pipeline: "web".into(),
            execution_id: "e".into(),
            stage: "Build".into(),
            action: "Compile".into(),
            attempt: 1,
            plugin: PluginRef {
                provider: "shell".into(),
                version: "1".into(),
                digest: "ab".repeat(32),
                signature: Some("{}".into()),
                publisher: Some("acme".into()),
            },
            configuration: vec![("Commands".into(), "make".into())],
            variables: vec![("variables.ENV".into(), "prod".into())],
            inputs: vec![InputArtifact { name: "src".into(), digest: "cd".repeat(32), size: 9 }],
            outputs: vec![OutputSpec { name: "bin".into(), files: vec!["out/**".into()] }],
            grants: Grants { exec: vec!["sh".into()], ..Grants::default() },
            secrets: vec![("TOKEN".into(), "s3cret".into())],
            timeout_ms: 60_000,
        };
        let mut frames = vec![
            encode(&FromAgent::Hello(Hello {
                protocol_version: PROTOCOL_VERSION,
                agent_version: "0.1.0".into(),
                labels: [("os".to_string(), "linux".to_string())].into(),
                slots: 2,
                running: vec!["a".into(), "b".into()],
                plugins: vec!["ab".repeat(32)],
                instance: 7,
            })),
            encode(&FromAgent::Log { job_id: "j".into(), seq: 7, text: "hello\n".into() }),
            encode(&FromAgent::JobFinished {
                job_id: "j".into(),
                lease_epoch: 2,
                result: JobResult::Succeeded {
                    summary: "ok".into(),
                    output_variables: [("CommitId".to_string(), "c0ffee".to_string())].into(),
                    external_url: Some("https://x".into()),
                    outputs: vec![ProducedArtifact { name: "bin".into(), digest: "ef".repeat(32), size: 1 }],
                },
            }),
            encode(&ToAgent::Job(Box::new(job))),
            encode(&ToAgent::LogAck { job_id: "j".into(), seq: 9 }),
            encode(&StreamRequest::PutArtifact { digest: "01".repeat(32), size: 5, offset: 2 }),
            encode(&StreamRequest::UploadOffset { digest: "01".repeat(32), size: 5 }),
            encode(&StreamRequest::Logs { job_id: "j".into() }),
            encode(&StreamReply::Error { message: "no".into() }),
        ];
        frames.push(Ok(frames.iter().flatten().flatten().copied().collect()));
        frames.into_iter().map(|f| f.expect("the corpus encodes")).collect()
    }

    fn mutate(rng: &mut Rng, mut bytes: Vec<u8>) -> Vec<u8> {
        for _ in 0..=rng.below(4) {
            let at = rng.below(bytes.len() + 1);
            match rng.below(6) {
                0 if !bytes.is_empty() => {
                    let i = at.min(bytes.len() - 1);
                    bytes[i] ^= 1 << rng.below(8);
                }
                1 => bytes.insert(at, rng.next() as u8),
                2 => bytes.truncate(at),
                3 => {
                    let end = (at + rng.below(16)).min(bytes.len());
                    bytes.drain(at..end);
                }
                // A length prefix, or a varint length inside postcard,
                // claiming something huge.
                4 => bytes.splice(at..at, (rng.next() as u32).to_be_bytes()).for_each(drop),
                _ => bytes.splice(at..at, [0xff, 0xff, 0xff, 0xff, 0x0f]).for_each(drop),
            }
        }
        bytes
    }

    /// Decoding hostile bytes never panics and never allocates without
    /// bound, however large the lengths they claim.
    #[test]
    fn mutated_frames_neither_panic_nor_allocate_without_bound() {
        let corpus = corpus();
        for seed in 1..=3000u64 {
            let mut rng = Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1);
            let seed_frame = corpus[rng.below(corpus.len())].clone();
            let input = mutate(&mut rng, seed_frame);
            let piece = 1 + rng.below(64);
            let before = allocation::reset_peak();
            let result = std::panic::catch_unwind(|| fuzzing::decode_every_message(&input, piece));
            let peak = allocation::peak().saturating_sub(before);
            assert!(result.is_ok(), "seed {seed}: decoding panicked on {input:02x?}");
            // Buffered input, plus at most what serde preallocates for a
            // collection whose claimed length it does not trust (1 MiB).
            let bound = (4 << 20) + 8 * input.len();
            assert!(peak <= bound, "seed {seed}: {peak} bytes allocated for {} bytes of input", input.len());
        }
    }

    /// Counts this thread's live heap bytes, to bound what decoding costs.
    /// A global allocator cannot be written without `unsafe`; this one only
    /// counts and hands every call to the system allocator, in tests only.
    #[allow(unsafe_code)]
    mod allocation {
        use std::alloc::{GlobalAlloc, Layout, System};
        use std::cell::Cell;

        struct Counting;

        thread_local! {
            static LIVE: Cell<usize> = const { Cell::new(0) };
            static PEAK: Cell<usize> = const { Cell::new(0) };
        }

        // SAFETY: defers to the system allocator; only counts.
        unsafe impl GlobalAlloc for Counting {
            unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
                let _ = LIVE.try_with(|live| {
                    live.set(live.get() + layout.size());
                    let _ = PEAK.try_with(|peak| peak.set(peak.get().max(live.get())));
                });
                // SAFETY: the caller's layout goes to the system allocator as is.
                unsafe { System.alloc(layout) }
            }
            unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
                let _ = LIVE.try_with(|live| live.set(live.get().saturating_sub(layout.size())));
                // SAFETY: `ptr` came from `alloc` above with this layout.
                unsafe { System.dealloc(ptr, layout) }
            }
        }

        #[global_allocator]
        static COUNTING: Counting = Counting;

        /// Starts a new peak from the bytes live now; returns them.
        pub fn reset_peak() -> usize {
            let live = LIVE.with(Cell::get);
            PEAK.with(|p| p.set(live));
            live
        }

        pub fn peak() -> usize {
            PEAK.with(Cell::get)
        }
    }

    // Several controllers, one leader (issue 18, reach).
    #[test]
    fn a_standby_refusal_names_the_leader_or_none() {
        let named = not_leader_reason(Some("10.0.0.2:7443"));
        assert_eq!(named, "not the leader; leader is 10.0.0.2:7443");
        assert_eq!(parse_not_leader(named.as_bytes()), Some(Some("10.0.0.2:7443".to_string())));
        assert_eq!(parse_not_leader(not_leader_reason(None).as_bytes()), Some(None));
        assert_eq!(parse_not_leader(not_leader_reason(Some(" ")).as_bytes()), Some(None));
        assert_eq!(parse_not_leader(b"agent reconnecting"), None);
        assert_eq!(parse_not_leader(b"not the leader; leader is a b"), Some(None), "no spaces in an address");
        assert_eq!(parse_not_leader(b"not the leader; leader is a,b"), Some(None), "one address");
        assert_eq!(parse_not_leader(&[0xff, 0xfe]), None);
    }

    #[test]
    fn join_token_round_trips_and_rejects_garbage() {
        let token = JoinToken { ca_fingerprint: "ab".repeat(32), secret: "s".repeat(32) };
        assert_eq!(JoinToken::parse(&token.to_string()).unwrap(), token);
        assert!(JoinToken::parse("nope").unwrap_err().contains("malformed"));
        assert!(JoinToken::parse("sjt9.aa.bb").unwrap_err().contains("unknown format"));
        assert!(JoinToken::parse(&format!("sjt1.{}.short", "ab".repeat(32))).unwrap_err().contains("too short"));
    }
}
