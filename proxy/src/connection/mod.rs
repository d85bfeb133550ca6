//! One TCP connection: protocol header, handshake, then frames to channels.
//!
//! One task owns the socket and every channel of the connection, without
//! locks. Its loop waits on three things: bytes from the client, answers from
//! RocketMQ for publishes in flight, and the heartbeat clock. It reads the
//! socket only while the publish pipeline has room (backpressure), and tells
//! clients that support it when it stopped reading for long
//! (connection.blocked). Output is gathered in one buffer and written once
//! per loop turn, not once per frame.
//!
//! This file holds the loop and the frame dispatch; `handshake` the
//! connection methods before open, `output` the write side and the clock,
//! `publishes` confirms and backpressure, `close` every way a connection ends,
//! `bounds` what a connection may open and hold.
//! (Over 500 lines: the loop and the frame dispatch share the connection's
//! state; what stands alone is in those sibling modules.)

mod bounds;
mod close;
pub mod handshake;
pub mod login_failures;
mod output;
mod publishes;
pub mod roster;
pub mod transport;

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::atomic::AtomicUsize;
use std::sync::Arc;
use std::time::Duration;

use amq_protocol::protocol::{channel as channel_method, connection, AMQPClass};
use bytes::BytesMut;
use futures_util::{FutureExt, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{mpsc, watch};
use tokio::time::{sleep_until, Instant};

use crate::channel::{self, Channel, Pipeline, Session};
use crate::codec::{Frame, FrameDecoder, FrameEncoder, PROTOCOL_HEADER};
use crate::delivery::{ConnectionSink, ToConnection};
use crate::error::{ConnectionException, HardCode, ProtocolError};
use crate::topology::{Permission, Vhost};
use crate::Gateway;
use handshake::{ClientCapabilities, Tuning};

/// RabbitMQ's default: the whole handshake must finish within 10 s.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long we wait for close-ok after sending connection.close.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(3);
/// Deliveries are taken from feeds only while less than this is waiting
/// for the socket: a client that stops reading stops its feeds.
const OUT_LIMIT: usize = 1 << 20;
/// How long the last bytes may take to leave once the connection is done.
const LAST_WRITE_TIMEOUT: Duration = Duration::from_secs(2);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    AwaitStartOk,
    AwaitTuneOk,
    AwaitOpen,
    Open,
    /// We sent connection.close and wait for close-ok.
    Closing,
    Closed,
}

/// The vhost a connection opened, with the user's permission on it.
struct Opened {
    vhost: Arc<Vhost>,
    permission: Permission,
}

pub struct Connection {
    gateway: Arc<Gateway>,
    peer: SocketAddr,
    /// Unique across gateways: owns exclusive queues.
    name: String,
    reader: transport::Reader,
    writer: transport::Writer,
    /// A refused login is answered after this (login_failures.rs).
    login_delay: Option<Duration>,
    /// The client's verified TLS certificate, if it showed one (EXTERNAL).
    peer_identity: Option<crate::tls::PeerIdentity>,
    read_buf: BytesMut,
    out: FrameEncoder,
    decoder: FrameDecoder,
    state: State,
    tuning: Tuning,
    client: ClientCapabilities,
    user: String,
    opened: Option<Opened>,
    channels: HashMap<u16, Channel>,
    /// Channels we closed, waiting for the client's close-ok.
    closing_channels: HashSet<u16>,
    next_epoch: u64,
    pipeline: Pipeline,
    /// Deliveries from the feeds of the queues this connection consumes.
    sink: ConnectionSink,
    deliveries: mpsc::UnboundedReceiver<ToConnection>,
    /// Body bytes handed to this connection by feeds and not yet written.
    in_transit: Arc<AtomicUsize>,
    /// Channels closed since the last turn, whose consumers and unacked
    /// messages are still to be released.
    released: Vec<Channel>,
    /// Since when the pipeline has been full.
    full_since: Option<Instant>,
    blocked: bool,
    /// The client closed the connection: close-ok goes out once its
    /// channels are released and its exclusive queues deleted, so a
    /// connection opened right after sees them gone (as with RabbitMQ).
    close_ok_owed: bool,
    last_read: Instant,
    last_write: Instant,
    /// Since when output has waited without the socket taking any of it.
    write_stalled_since: Option<Instant>,
    /// Accepted beyond max_connections: refused at connection.open, so the
    /// client reads a reason instead of waiting in the accept queue.
    over_limit: bool,
    deadline: Option<Instant>,
    /// Turns true when the gateway shuts down (`Gateway::stopping`).
    stopping: watch::Receiver<bool>,
    /// This connection in the gateway's roster (metrics, management API).
    listed: roster::Listed,
    /// What the management API asks of this connection.
    asked: mpsc::UnboundedReceiver<roster::Ask>,
    /// The client's properties and SASL mechanism from start-ok, as the
    /// management API shows them.
    introduced: (serde_json::Value, String),
}

impl Connection {
    pub fn new(
        gateway: Arc<Gateway>,
        transport: transport::Transport,
        peer: SocketAddr,
        id: u64,
    ) -> Connection {
        let transport::Transport {
            reader,
            writer,
            local,
            peer_identity,
        } = transport;
        let tls = matches!(writer, transport::Writer::Tls { .. });
        let config = &gateway.config;
        let tuning = Tuning {
            channel_max: config.channel_max,
            frame_max: config.frame_max as usize,
            heartbeat: 0,
        };
        let now = Instant::now();
        let (sink, deliveries) = mpsc::unbounded_channel();
        let local = local.unwrap_or(peer);
        let (listed, asked) =
            gateway
                .connections
                .list(id, peer, local, tls, gateway.clock.now_ms());
        Connection {
            listed,
            asked,
            introduced: (serde_json::Value::Null, String::new()),
            stopping: gateway.stopping.subscribe(),
            sink,
            deliveries,
            in_transit: Arc::default(),
            released: Vec::new(),
            name: format!("{}/{id}", gateway.instance_id),
            // Until tune-ok, frames are held to the spec's frame-min-size
            // (RabbitMQ refuses larger ones during negotiation too).
            decoder: FrameDecoder {
                frame_max: crate::codec::FRAME_MIN_SIZE,
            },
            peer,
            reader,
            writer,
            peer_identity,
            login_delay: None,
            read_buf: BytesMut::with_capacity(64 * 1024),
            out: FrameEncoder::default(),
            state: State::AwaitStartOk,
            tuning,
            client: ClientCapabilities::default(),
            user: String::new(),
            opened: None,
            channels: HashMap::new(),
            closing_channels: HashSet::new(),
            next_epoch: 0,
            pipeline: Pipeline::new(),
            full_since: None,
            blocked: false,
            close_ok_owed: false,
            last_read: now,
            last_write: now,
            write_stalled_since: None,
            over_limit: false,
            deadline: Some(now + HANDSHAKE_TIMEOUT),
            gateway,
        }
    }

    /// Marks a connection accepted beyond max_connections (see `over_limit`).
    pub fn over_limit(mut self) -> Connection {
        self.over_limit = true;
        self
    }

    /// Serves the connection until it ends; never panics on client input.
    pub async fn run(mut self) {
        match self.serve().await {
            Ok(()) => tracing::debug!("Connection closed."),
            Err(e) => tracing::debug!(error = %e, "Connection ended by I/O error."),
        }
        self.finish().await;
    }

    async fn serve(&mut self) -> std::io::Result<()> {
        if !self.read_protocol_header().await? {
            return Ok(());
        }
        self.out.method(
            0,
            handshake::start(&handshake::mechanisms(
                &self.gateway.config,
                self.peer_identity.is_some(),
            )),
        );
        while self.state != State::Closed {
            self.stop_if_told();
            self.write_what_fits()?;
            self.turn().await?;
        }
        Ok(())
    }

    /// Reads the 8-byte header; a wrong one is answered with ours, then closed.
    async fn read_protocol_header(&mut self) -> std::io::Result<bool> {
        let read = tokio::time::timeout(HANDSHAKE_TIMEOUT, async {
            while self.read_buf.len() < PROTOCOL_HEADER.len() {
                if self.reader.read_buf(&mut self.read_buf).await? == 0 {
                    return Ok(false);
                }
            }
            Ok::<_, std::io::Error>(true)
        })
        .await;
        let complete = matches!(read, Ok(Ok(true)));
        if complete && &self.read_buf[..PROTOCOL_HEADER.len()] == PROTOCOL_HEADER {
            let _ = self.read_buf.split_to(PROTOCOL_HEADER.len());
            return Ok(true);
        }
        if complete {
            tracing::info!("Unsupported protocol header; answered with AMQP 0-9-1's and closed.");
            self.writer.write_all(PROTOCOL_HEADER).await?;
        }
        let _ = self.writer.shutdown().await;
        Ok(false)
    }

    /// One turn of the loop: whichever of socket, pipeline or clock is ready.
    async fn turn(&mut self) -> std::io::Result<()> {
        let max_in_flight = self.gateway.config.max_in_flight;
        let room = self.pipeline.len() < max_in_flight;
        self.track_backpressure(room);
        let heartbeat = self.next_heartbeat_check();
        let blocked_at = self
            .full_since
            .map(|t| t + Duration::from_millis(self.gateway.config.blocked_after_ms));
        let writing = !self.out.is_empty() || self.writer.unflushed();
        let taking_deliveries = self.out.len() < OUT_LIMIT;
        tokio::select! {
            // The socket had no room at the end of the last turn.
            written = self.writer.write_or_flush(self.out.pending()), if writing => {
                let written = written?;
                if !self.out.is_empty() {
                    self.wrote(written)?;
                }
            }
            Some(done) = self.pipeline.next(), if !self.pipeline.is_empty() => {
                self.publish_done(done);
                while let Some(Some(done)) = self.pipeline.next().now_or_never() {
                    self.publish_done(done);
                }
                self.send_acks();
            }
            read = self.reader.read_buf(&mut self.read_buf), if room && self.reading() => {
                if read? == 0 {
                    self.state = State::Closed;
                    return Ok(());
                }
                self.last_read = Instant::now();
                self.process_frames().await;
                // Channels and consumers change only through what the client
                // sends (and channel closes, counted when released).
                self.count_channels();
                self.send_acks();
            }
            Some(first) = self.deliveries.recv(), if taking_deliveries => self.on_deliveries(first),
            Ok(()) = self.stopping.changed() => {}
            Some(ask) = self.asked.recv() => self.answer(ask),
            _ = sleep_until(heartbeat) => self.on_clock(),
            _ = sleep_until(blocked_at.unwrap_or_else(far_future)), if blocked_at.is_some() && !self.blocked => {
                self.block();
            }
        }
        self.release_channels().await;
        Ok(())
    }

    async fn process_frames(&mut self) {
        loop {
            let frame = match self.decoder.decode(&mut self.read_buf) {
                Ok(Some(frame)) => frame,
                Ok(None) => return,
                Err(e) => {
                    self.raise(e.into());
                    // The stream cannot be resynchronised after a framing error.
                    self.read_buf.clear();
                    return;
                }
            };
            if let Err(e) = self.handle_frame(frame).await {
                self.raise(e);
            }
            if self.state == State::Closed {
                return;
            }
        }
    }

    async fn handle_frame(&mut self, frame: Frame) -> Result<(), ProtocolError> {
        match self.state {
            State::Closing => return self.while_closing(frame),
            State::Closed => return Ok(()),
            State::AwaitStartOk | State::AwaitTuneOk | State::AwaitOpen => {
                let result = self.handshake(frame);
                if let Some(delay) = self.login_delay.take() {
                    tokio::time::sleep(delay).await;
                }
                return result;
            }
            State::Open => {}
        }
        match frame {
            Frame::Heartbeat(0) => Ok(()),
            // 505, as RabbitMQ answers a heartbeat on a channel.
            Frame::Heartbeat(ch) => Err(ConnectionException::new(
                HardCode::UnexpectedFrame,
                format!("heartbeat frame on channel {ch}"),
            )
            .into()),
            Frame::Method(0, AMQPClass::Connection(m)) => self.connection_method(m),
            Frame::Method(0, _) | Frame::Header(0, _) | Frame::Body(0, _) => {
                Err(ConnectionException::new(
                    HardCode::CommandInvalid,
                    "only connection methods may use channel 0",
                )
                .into())
            }
            Frame::Method(_, AMQPClass::Connection(_)) => Err(ConnectionException::new(
                HardCode::CommandInvalid,
                "connection method on a non-zero channel",
            )
            .into()),
            Frame::Method(id, method) => self.channel_method(id, method).await,
            Frame::Header(id, header) => {
                self.with_channel(id, |ch, s| channel::handle_header(ch, s, header))
            }
            Frame::Body(id, body) => {
                self.check_content_held(body.len())?;
                self.with_channel(id, |ch, s| channel::handle_body(ch, s, body))
            }
            Frame::BadHeader(id) => {
                let expected = self
                    .channels
                    .get(&id)
                    .is_some_and(|ch| !ch.content.is_idle());
                Err(if expected {
                    ConnectionException::new(HardCode::FrameError, "malformed content header frame")
                } else {
                    ConnectionException::new(
                        HardCode::UnexpectedFrame,
                        format!("expected a method frame on channel {id}, got a content header"),
                    )
                }
                .into())
            }
        }
    }

    fn handshake(&mut self, frame: Frame) -> Result<(), ProtocolError> {
        let method = match frame {
            Frame::Method(0, AMQPClass::Connection(m)) => m,
            Frame::Heartbeat(0) => return Ok(()),
            _ => {
                return Err(ConnectionException::new(
                    HardCode::UnexpectedFrame,
                    "expected a connection method during the handshake",
                )
                .into());
            }
        };
        match (self.state, method) {
            (State::AwaitStartOk, connection::AMQPMethod::StartOk(m)) => {
                let authenticated = handshake::authenticate(&self.gateway, self.peer, self.peer_identity.as_ref(), &m)
                    .inspect_err(|e| {
                        let delay = self.gateway.login_failures.failed(self.peer.ip(), std::time::Instant::now());
                        let user = handshake::claimed_user(&m).unwrap_or_default();
                        tracing::warn!(%user, reason = %e.text, mechanism = %m.mechanism, answered_after_ms = delay.as_millis() as u64, "Login refused.");
                        if !delay.is_zero() {
                            self.login_delay = Some(delay);
                        }
                    });
                let (user, client) = match authenticated {
                    Ok(found) => found,
                    // A client that cannot read a close here is told by the
                    // socket closing, as RabbitMQ tells it.
                    Err(_) if !handshake::reads_auth_failure_close(&m.client_properties) => {
                        self.state = State::Closed;
                        return Ok(());
                    }
                    Err(refused) => return Err(refused.into()),
                };
                self.user = user;
                self.client = client;
                self.introduced = (
                    serde_json::Value::Object(crate::definitions::table_to_json(&m.client_properties)),
                    m.mechanism.to_string(),
                );
                self.out.method(0, handshake::tune(&self.gateway.config));
                self.state = State::AwaitTuneOk;
                Ok(())
            }
            (State::AwaitTuneOk, connection::AMQPMethod::TuneOk(m)) => {
                self.tuning = handshake::accept_tune_ok(&self.gateway.config, &m)?;
                self.decoder.frame_max = self.tuning.frame_max;
                self.state = State::AwaitOpen;
                Ok(())
            }
            (State::AwaitOpen, connection::AMQPMethod::Open(_)) if self.over_limit => {
                Err(ConnectionException::new(
                    HardCode::NotAllowed,
                    format!(
                        "this gateway serves at most {} connections (max_connections); try again later or another gateway",
                        self.gateway.config.max_connections
                    ),
                )
                .on_method(10, 40)
                .into())
            }
            (State::AwaitOpen, connection::AMQPMethod::Open(m)) => {
                let (vhost, permission) = handshake::open(&self.gateway, &self.user, &m)?;
                tracing::info!(user = %self.user, vhost = %vhost.name, "Connection opened.");
                self.listed.opened(roster::Opened {
                    user: self.user.clone(),
                    vhost: vhost.name.clone(),
                    client_properties: std::mem::take(&mut self.introduced.0),
                    auth_mechanism: std::mem::take(&mut self.introduced.1),
                    channel_max: self.tuning.channel_max,
                    frame_max: self.tuning.frame_max as u32,
                    heartbeat: self.tuning.heartbeat,
                });
                self.opened = Some(Opened { vhost, permission });
                self.out.method(
                    0,
                    AMQPClass::Connection(connection::AMQPMethod::OpenOk(connection::OpenOk {})),
                );
                self.state = State::Open;
                self.deadline = None;
                Ok(())
            }
            (_, connection::AMQPMethod::Close(_)) => {
                self.out.method(
                    0,
                    AMQPClass::Connection(connection::AMQPMethod::CloseOk(connection::CloseOk {})),
                );
                self.state = State::Closed;
                Ok(())
            }
            (state, m) => Err(ConnectionException::new(
                HardCode::CommandInvalid,
                format!(
                    "connection.{} is not expected in state {state:?}",
                    method_name(&m)
                ),
            )
            .into()),
        }
    }

    fn connection_method(&mut self, m: connection::AMQPMethod) -> Result<(), ProtocolError> {
        match m {
            connection::AMQPMethod::Close(c) => {
                tracing::debug!(code = c.reply_code, text = %c.reply_text, "Client closed the connection.");
                self.close_ok_owed = true;
                self.state = State::Closed;
                Ok(())
            }
            connection::AMQPMethod::CloseOk(_) => {
                self.state = State::Closed;
                Ok(())
            }
            // Clients may tell us they are blocked; nothing to do.
            connection::AMQPMethod::Blocked(_) | connection::AMQPMethod::Unblocked(_) => Ok(()),
            // RabbitMQ's internal user store takes any new secret for the
            // user already logged in (only token backends check it): the
            // user and their permissions stay as they are.
            connection::AMQPMethod::UpdateSecret(u) => {
                tracing::info!(user = %self.user, reason = %u.reason, "connection.update-secret: the secret is not checked (internal users), the user stays.");
                self.out.method(
                    0,
                    AMQPClass::Connection(connection::AMQPMethod::UpdateSecretOk(
                        connection::UpdateSecretOk {},
                    )),
                );
                Ok(())
            }
            other => Err(ConnectionException::new(
                HardCode::CommandInvalid,
                format!(
                    "connection.{} is not expected on an open connection",
                    method_name(&other)
                ),
            )
            .into()),
        }
    }

    async fn channel_method(&mut self, id: u16, method: AMQPClass) -> Result<(), ProtocolError> {
        if self.closing_channels.contains(&id) {
            // After we sent channel.close, only close / close-ok matter.
            match method {
                AMQPClass::Channel(channel_method::AMQPMethod::CloseOk(_)) => {
                    self.closing_channels.remove(&id);
                }
                AMQPClass::Channel(channel_method::AMQPMethod::Close(_)) => {
                    self.closing_channels.remove(&id);
                    self.out.method(
                        id,
                        AMQPClass::Channel(channel_method::AMQPMethod::CloseOk(
                            channel_method::CloseOk {},
                        )),
                    );
                }
                _ => {}
            }
            return Ok(());
        }
        match method {
            AMQPClass::Channel(channel_method::AMQPMethod::Open(_))
                if !self.channels.contains_key(&id) =>
            {
                self.open_channel(id)
            }
            AMQPClass::Channel(channel_method::AMQPMethod::Close(c))
                if self.channels.contains_key(&id) =>
            {
                tracing::debug!(
                    channel = id,
                    code = c.reply_code,
                    "Client closed a channel."
                );
                if let Some(ch) = self.channels.remove(&id) {
                    self.released.push(ch);
                }
                self.out.method(
                    id,
                    AMQPClass::Channel(channel_method::AMQPMethod::CloseOk(
                        channel_method::CloseOk {},
                    )),
                );
                Ok(())
            }
            mut method => {
                channel::queue::strip_line_breaks(&mut method);
                if reads_queue_state(&method) {
                    self.settle_pipeline().await;
                }
                if let Some(opened) = self.opened.as_ref() {
                    if channel::names_unknown(&opened.vhost, &method) {
                        crate::follow::catch_up_now(&self.gateway).await;
                    }
                }
                let (Some(opened), Some(ch)) = (self.opened.as_ref(), self.channels.get_mut(&id))
                else {
                    return Err(ConnectionException::new(
                        HardCode::ChannelError,
                        format!("expected 'channel.open' on channel {id}"),
                    )
                    .into());
                };
                let mut session = Session {
                    gateway: &self.gateway,
                    vhost: &opened.vhost,
                    user: &self.user,
                    permission: &opened.permission,
                    connection_name: &self.name,
                    out: &mut self.out,
                    frame_max: self.tuning.frame_max,
                    pipeline: &mut self.pipeline,
                    sink: &self.sink,
                    in_transit: &self.in_transit,
                };
                channel::handle_method(ch, &mut session, method).await
            }
        }
    }

    /// Content frames go to their channel; a channel that is not open is 504.
    fn with_channel(
        &mut self,
        id: u16,
        f: impl FnOnce(&mut Channel, &mut Session<'_>) -> Result<(), ProtocolError>,
    ) -> Result<(), ProtocolError> {
        if self.closing_channels.contains(&id) {
            return Ok(());
        }
        let (Some(opened), Some(ch)) = (self.opened.as_ref(), self.channels.get_mut(&id)) else {
            return Err(ConnectionException::new(
                HardCode::ChannelError,
                format!("content on channel {id}, which is not open"),
            )
            .into());
        };
        let mut session = Session {
            gateway: &self.gateway,
            vhost: &opened.vhost,
            user: &self.user,
            permission: &opened.permission,
            connection_name: &self.name,
            out: &mut self.out,
            frame_max: self.tuning.frame_max,
            pipeline: &mut self.pipeline,
            sink: &self.sink,
            in_transit: &self.in_transit,
        };
        f(ch, &mut session)
    }
}

/// Methods whose answer depends on what earlier publishes stored.
fn reads_queue_state(method: &AMQPClass) -> bool {
    use amq_protocol::protocol::{basic, queue};
    matches!(
        method,
        AMQPClass::Basic(basic::AMQPMethod::Get(_) | basic::AMQPMethod::Consume(_))
            | AMQPClass::Queue(
                queue::AMQPMethod::Declare(_)
                    | queue::AMQPMethod::Purge(_)
                    | queue::AMQPMethod::Delete(_)
            )
    )
}

fn far_future() -> Instant {
    Instant::now() + Duration::from_secs(86_400 * 365)
}

fn method_name(m: &connection::AMQPMethod) -> &'static str {
    match m {
        connection::AMQPMethod::Start(_) => "start",
        connection::AMQPMethod::StartOk(_) => "start-ok",
        connection::AMQPMethod::Secure(_) => "secure",
        connection::AMQPMethod::SecureOk(_) => "secure-ok",
        connection::AMQPMethod::Tune(_) => "tune",
        connection::AMQPMethod::TuneOk(_) => "tune-ok",
        connection::AMQPMethod::Open(_) => "open",
        connection::AMQPMethod::OpenOk(_) => "open-ok",
        connection::AMQPMethod::Close(_) => "close",
        connection::AMQPMethod::CloseOk(_) => "close-ok",
        connection::AMQPMethod::Blocked(_) => "blocked",
        connection::AMQPMethod::Unblocked(_) => "unblocked",
        connection::AMQPMethod::UpdateSecret(_) => "update-secret",
        connection::AMQPMethod::UpdateSecretOk(_) => "update-secret-ok",
    }
}
