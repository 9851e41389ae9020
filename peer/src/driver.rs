//! The driver: the task that owns the swarm. It takes [`Command`]s from the [`Node`] handle
//! (ask every peer HAVE or META, GET from one, ban one), turns swarm events into answers to
//! them, hands inbound requests to the [`Server`] and sends what it answers, and redials the
//! configured peers.
//!
//! [`Node`]: crate::Node

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use futures_util::future::BoxFuture;
use libp2p::request_response::{self, InboundRequestId, OutboundRequestId, ResponseChannel};
use libp2p::swarm::SwarmEvent;
use libp2p::{Multiaddr, PeerId, Swarm, mdns};
use relsync_engine::ManifestId;
use relsync_engine::{Holding, PeerError, PeerFrames};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tracing::{debug, warn};

use crate::node::{Behaviour, BehaviourEvent, dial};
use crate::round::{Answered, Round, Rounds};
use crate::serve::{Counters, Server, Serving};
use crate::wire::{GetRequest, GetResponse, HaveRequest, MetaRequest, MetaResponse};

/// What the [`Node`](crate::Node) handle asks of the driver.
pub(crate) enum Command {
    /// Ask every peer what it holds of `manifest`, a table of `chunks` chunks.
    Have {
        manifest: ManifestId,
        chunks: u32,
        reply: oneshot::Sender<Vec<Holding>>,
    },
    /// Ask `peer` for a batch of chunks.
    Get {
        peer: PeerId,
        request: GetRequest,
        reply: oneshot::Sender<Result<PeerFrames, PeerError>>,
    },
    /// Ask every peer for the document at `path`, of at most `limit` bytes.
    Meta {
        path: String,
        limit: u64,
        reply: oneshot::Sender<Vec<(String, Vec<u8>)>>,
    },
    /// Disconnect `peer` and ignore it for the ban's length.
    Ban { peer: PeerId, reason: String },
    /// The peers connected now, banned ones excluded.
    Connected { reply: oneshot::Sender<Vec<PeerId>> },
}

/// An answer computed off the swarm task, to send.
enum Answer {
    Get {
        id: InboundRequestId,
        channel: ResponseChannel<GetResponse>,
        response: GetResponse,
    },
    Meta {
        id: InboundRequestId,
        channel: ResponseChannel<MetaResponse>,
        response: MetaResponse,
    },
}

/// The task that owns the swarm.
pub(crate) struct Driver {
    swarm: Swarm<Behaviour>,
    server: Server,
    /// How long a ban lasts.
    ban: Duration,
    /// Peers to keep dialing, with their ids where given.
    statics: Vec<(Multiaddr, Option<PeerId>)>,
    banned: HashMap<PeerId, Instant>,
    rounds: Rounds,
    gets: HashMap<OutboundRequestId, oneshot::Sender<Result<PeerFrames, PeerError>>>,
    answers_tx: mpsc::Sender<Answer>,
    counters: Arc<Counters>,
}

impl Driver {
    /// Starts driving `swarm` in a task: serving with `server`, banning for `ban`, redialing
    /// `statics`. Returns where to send commands, and the task.
    pub(crate) fn spawn(
        swarm: Swarm<Behaviour>,
        server: Server,
        ban: Duration,
        statics: Vec<(Multiaddr, Option<PeerId>)>,
        counters: Arc<Counters>,
    ) -> (mpsc::Sender<Command>, JoinHandle<()>) {
        let (commands, inbox) = mpsc::channel(256);
        let (answers_tx, answers) = mpsc::channel(256);
        let driver = Driver {
            swarm,
            server,
            ban,
            statics,
            banned: HashMap::new(),
            rounds: Rounds::default(),
            gets: HashMap::new(),
            answers_tx,
            counters,
        };
        (commands, tokio::spawn(driver.run(inbox, answers)))
    }

    async fn run(
        mut self,
        mut inbox: mpsc::Receiver<Command>,
        mut answers: mpsc::Receiver<Answer>,
    ) {
        let mut redial = tokio::time::interval(Duration::from_secs(5));
        redial.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                event = self.swarm.select_next_some() => self.event(event),
                command = inbox.recv() => match command {
                    Some(command) => self.command(command),
                    None => break,
                },
                Some(answer) = answers.recv() => self.answer(answer),
                _ = redial.tick() => self.redial(),
            }
        }
    }

    fn is_banned(&self, peer: &PeerId) -> bool {
        self.banned
            .get(peer)
            .is_some_and(|until| *until > Instant::now())
    }

    /// Connected peers that are not banned.
    fn peers(&self) -> Vec<PeerId> {
        self.swarm
            .connected_peers()
            .filter(|p| !self.is_banned(p))
            .copied()
            .collect()
    }

    fn redial(&mut self) {
        let now = Instant::now();
        self.banned.retain(|_, until| *until > now);
        for (addr, peer) in self.statics.clone() {
            if let Some(peer) = peer
                && !self.swarm.is_connected(&peer)
                && !self.is_banned(&peer)
                && peer != *self.swarm.local_peer_id()
            {
                dial(&mut self.swarm, &addr, Some(peer));
            }
        }
    }

    fn command(&mut self, command: Command) {
        match command {
            Command::Have {
                manifest,
                chunks,
                reply,
            } => {
                let request = HaveRequest {
                    manifest: *manifest.as_bytes(),
                };
                self.broadcast(Round::have(chunks, reply), |behaviour, peer| {
                    behaviour.have.send_request(peer, request.clone())
                });
            }
            Command::Meta { path, limit, reply } => {
                self.broadcast(Round::meta(limit, reply), |behaviour, peer| {
                    let request = MetaRequest {
                        path: path.clone(),
                        limit: Some(limit),
                    };
                    behaviour.meta.send_request(peer, request)
                });
            }
            Command::Get {
                peer,
                request,
                reply,
            } => {
                if self.is_banned(&peer) || !self.swarm.is_connected(&peer) {
                    let _ = reply.send(Err(PeerError::Failed("not connected".into())));
                    return;
                }
                let id = self.swarm.behaviour_mut().get.send_request(&peer, request);
                self.gets.insert(id, reply);
            }
            Command::Ban { peer, reason } => {
                warn!(%peer, %reason, "banning peer");
                self.counters.banned();
                self.banned.insert(peer, Instant::now() + self.ban);
                let _ = self.swarm.disconnect_peer_id(peer);
            }
            Command::Connected { reply } => {
                let _ = reply.send(self.peers());
            }
        }
    }

    /// Sends a round's question to every peer, and opens the round.
    fn broadcast(
        &mut self,
        round: Round,
        mut send: impl FnMut(&mut Behaviour, &PeerId) -> OutboundRequestId,
    ) {
        let asked: Vec<OutboundRequestId> = self
            .peers()
            .iter()
            .map(|peer| send(self.swarm.behaviour_mut(), peer))
            .collect();
        self.rounds.open(round, asked);
    }

    fn event(&mut self, event: SwarmEvent<BehaviourEvent>) {
        match event {
            SwarmEvent::ConnectionEstablished { peer_id, .. } => {
                if self.is_banned(&peer_id) {
                    let _ = self.swarm.disconnect_peer_id(peer_id);
                } else {
                    debug!(%peer_id, "peer connected");
                }
            }
            SwarmEvent::Behaviour(BehaviourEvent::Mdns(mdns::Event::Discovered(found))) => {
                for (peer, addr) in found {
                    if !self.swarm.is_connected(&peer) && !self.is_banned(&peer) {
                        dial(&mut self.swarm, &addr, Some(peer));
                    }
                }
            }
            SwarmEvent::Behaviour(BehaviourEvent::Have(event)) => self.have_event(event.into()),
            SwarmEvent::Behaviour(BehaviourEvent::Meta(event)) => self.meta_event(event.into()),
            SwarmEvent::Behaviour(BehaviourEvent::Get(event)) => self.get_event(event.into()),
            _ => {}
        }
    }

    fn have_event(&mut self, event: Rpc<HaveRequest, crate::wire::HaveResponse>) {
        match event {
            Rpc::Request {
                peer,
                request,
                channel,
                ..
            } => {
                if self.is_banned(&peer) {
                    return;
                }
                let response = self.server.have(&request);
                let _ = self
                    .swarm
                    .behaviour_mut()
                    .have
                    .send_response(channel, response);
            }
            Rpc::Response { peer, id, response } => {
                self.rounds.answer(id, peer, Some(Answered::Have(response)));
            }
            Rpc::Failed { peer, id, .. } => self.rounds.answer(id, peer, None),
            Rpc::Answered { .. } => {}
        }
    }

    fn meta_event(&mut self, event: Rpc<MetaRequest, MetaResponse>) {
        match event {
            Rpc::Request {
                peer,
                id,
                request,
                channel,
            } => {
                if self.is_banned(&peer) {
                    return;
                }
                match self.server.meta(peer, id, request) {
                    Serving::Now(response) => {
                        let _ = self
                            .swarm
                            .behaviour_mut()
                            .meta
                            .send_response(channel, response);
                    }
                    Serving::Later(answer) => {
                        self.send_later(answer, move |response| Answer::Meta {
                            id,
                            channel,
                            response,
                        });
                    }
                }
            }
            Rpc::Response { peer, id, response } => {
                self.rounds
                    .answer(id, peer, Some(Answered::Meta(response.document)));
            }
            Rpc::Failed { peer, id, error } => {
                debug!(%peer, %error, "META request failed");
                self.rounds.answer(id, peer, None);
            }
            Rpc::Answered { id } => self.server.meta_done(id),
        }
    }

    fn get_event(&mut self, event: Rpc<GetRequest, GetResponse>) {
        match event {
            Rpc::Request {
                peer,
                id,
                request,
                channel,
            } => {
                if self.is_banned(&peer) {
                    return;
                }
                match self.server.get(peer, id, request) {
                    Serving::Now(response) => {
                        let _ = self
                            .swarm
                            .behaviour_mut()
                            .get
                            .send_response(channel, response);
                    }
                    Serving::Later(answer) => {
                        self.send_later(answer, move |response| Answer::Get {
                            id,
                            channel,
                            response,
                        });
                    }
                }
            }
            Rpc::Response { id, response, .. } => {
                if let Some(reply) = self.gets.remove(&id) {
                    let _ = reply.send(match response {
                        GetResponse::Frames(frames) => Ok(frames),
                        GetResponse::Busy => Err(PeerError::Busy),
                        GetResponse::Refused(why) => Err(PeerError::Failed(why)),
                    });
                }
            }
            Rpc::Failed { id, error, .. } => {
                if let Some(reply) = self.gets.remove(&id) {
                    let _ = reply.send(Err(PeerError::Failed(error)));
                }
            }
            Rpc::Answered { id } => self.server.get_done(id),
        }
    }

    /// Brings the response `answer` yields back to this task, as `wrap` makes it an
    /// [`Answer`], to send. If it yields none, its channel is dropped and the request fails.
    fn send_later<R: Send + 'static>(
        &self,
        answer: BoxFuture<'static, Option<R>>,
        wrap: impl FnOnce(R) -> Answer + Send + 'static,
    ) {
        let answers = self.answers_tx.clone();
        tokio::spawn(async move {
            if let Some(response) = answer.await {
                let _ = answers.send(wrap(response)).await;
            }
        });
    }

    /// Sends an answer computed off this task; if it cannot be sent, frees its slot.
    fn answer(&mut self, answer: Answer) {
        match answer {
            Answer::Get {
                id,
                channel,
                response,
            } => {
                let sent = self
                    .swarm
                    .behaviour_mut()
                    .get
                    .send_response(channel, response);
                if sent.is_err() {
                    self.server.get_done(id);
                }
            }
            Answer::Meta {
                id,
                channel,
                response,
            } => {
                let sent = self
                    .swarm
                    .behaviour_mut()
                    .meta
                    .send_response(channel, response);
                if sent.is_err() {
                    self.server.meta_done(id);
                }
            }
        }
    }
}

/// A request-response event, as the driver sees it.
enum Rpc<Request, Response> {
    Request {
        peer: PeerId,
        id: InboundRequestId,
        request: Request,
        channel: ResponseChannel<Response>,
    },
    Response {
        peer: PeerId,
        id: OutboundRequestId,
        response: Response,
    },
    Failed {
        peer: PeerId,
        id: OutboundRequestId,
        error: String,
    },
    /// The answer to inbound request `id` was sent, or can no longer be.
    Answered { id: InboundRequestId },
}

impl<Request, Response> From<request_response::Event<Request, Response>>
    for Rpc<Request, Response>
{
    fn from(event: request_response::Event<Request, Response>) -> Self {
        use request_response::{Event, Message};
        match event {
            Event::Message {
                peer,
                message:
                    Message::Request {
                        request_id,
                        request,
                        channel,
                    },
                ..
            } => Rpc::Request {
                peer,
                id: request_id,
                request,
                channel,
            },
            Event::Message {
                peer,
                message:
                    Message::Response {
                        request_id,
                        response,
                    },
                ..
            } => Rpc::Response {
                peer,
                id: request_id,
                response,
            },
            Event::OutboundFailure {
                peer,
                request_id,
                error,
                ..
            } => Rpc::Failed {
                peer,
                id: request_id,
                error: error.to_string(),
            },
            Event::ResponseSent { request_id, .. } | Event::InboundFailure { request_id, .. } => {
                Rpc::Answered { id: request_id }
            }
        }
    }
}
