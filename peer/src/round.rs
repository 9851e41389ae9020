//! Rounds: one HAVE or META question sent to every connected peer, its answers gathered until
//! each peer has answered or failed, then handed back together. An answer that does not fit
//! the question (a HAVE bitfield of the wrong size, a document over the asker's limit) is
//! dropped.

use std::collections::HashMap;
use std::hash::Hash;

use libp2p::PeerId;
use libp2p::request_response::OutboundRequestId;
use relsync_engine::{ChunkBits, Holding};
use tokio::sync::oneshot;
use tracing::debug;

use crate::wire::HaveResponse;

/// One HAVE or META question sent to every peer, and the answers so far.
pub(crate) enum Round {
    Have {
        chunks: u32,
        waiting: usize,
        answers: Vec<Holding>,
        reply: oneshot::Sender<Vec<Holding>>,
    },
    Meta {
        limit: u64,
        waiting: usize,
        answers: Vec<(String, Vec<u8>)>,
        reply: oneshot::Sender<Vec<(String, Vec<u8>)>>,
    },
}

/// An answer to a round, by protocol.
#[derive(Debug)]
pub(crate) enum Answered {
    Have(HaveResponse),
    Meta(Option<Vec<u8>>),
}

impl Round {
    /// HAVE for a manifest of `chunks` chunks, answered on `reply`.
    pub(crate) fn have(chunks: u32, reply: oneshot::Sender<Vec<Holding>>) -> Self {
        Round::Have {
            chunks,
            waiting: 0,
            answers: Vec::new(),
            reply,
        }
    }

    /// META for a document of at most `limit` bytes, answered on `reply`.
    pub(crate) fn meta(limit: u64, reply: oneshot::Sender<Vec<(String, Vec<u8>)>>) -> Self {
        Round::Meta {
            limit,
            waiting: 0,
            answers: Vec::new(),
            reply,
        }
    }

    fn waiting(&mut self) -> &mut usize {
        match self {
            Round::Have { waiting, .. } | Round::Meta { waiting, .. } => waiting,
        }
    }

    /// Keeps `peer`'s answer if it fits the question (`None`: its request failed).
    fn add(&mut self, peer: PeerId, answer: Option<Answered>) {
        match (self, answer) {
            (
                Round::Have {
                    chunks, answers, ..
                },
                Some(Answered::Have(HaveResponse::Have {
                    chunks: theirs,
                    bits,
                    fetching,
                    wanting,
                })),
            ) => {
                let fit = |bits| ChunkBits::from_bytes(bits, *chunks).filter(|_| theirs == *chunks);
                match (fit(bits), fit(fetching)) {
                    (Some(have), Some(fetching)) => answers.push(Holding {
                        peer: peer.to_string(),
                        have,
                        fetching,
                        wanting,
                    }),
                    _ => debug!(%peer, "HAVE answer does not fit the chunk table"),
                }
            }
            (
                Round::Have {
                    chunks, answers, ..
                },
                Some(Answered::Have(HaveResponse::Unknown)),
            ) => answers.push(Holding {
                peer: peer.to_string(),
                have: ChunkBits::empty(*chunks),
                fetching: ChunkBits::empty(*chunks),
                wanting: false,
            }),
            (Round::Meta { limit, answers, .. }, Some(Answered::Meta(document))) => {
                if let Some(document) = document.filter(|d| d.len() as u64 <= *limit) {
                    answers.push((peer.to_string(), document));
                }
            }
            _ => {}
        }
    }

    /// Hands the answers to the asker.
    fn finish(self) {
        match self {
            Round::Have { answers, reply, .. } => {
                let _ = reply.send(answers);
            }
            Round::Meta { answers, reply, .. } => {
                let _ = reply.send(answers);
            }
        }
    }
}

/// The rounds open, and which round each request sent belongs to. `Id` tells requests apart
/// (libp2p's outbound request id; plain numbers in tests).
pub(crate) struct Rounds<Id = OutboundRequestId> {
    rounds: HashMap<u64, Round>,
    round_of: HashMap<Id, u64>,
    next_round: u64,
}

impl<Id> Default for Rounds<Id> {
    fn default() -> Self {
        Self {
            rounds: HashMap::new(),
            round_of: HashMap::new(),
            next_round: 0,
        }
    }
}

impl<Id: Eq + Hash> Rounds<Id> {
    /// Opens `round`, whose question went out as requests `asked`, one per peer. A round that
    /// asked nobody finishes at once.
    pub(crate) fn open(&mut self, mut round: Round, asked: impl IntoIterator<Item = Id>) {
        let id = self.next_round;
        self.next_round += 1;
        for request in asked {
            self.round_of.insert(request, id);
            *round.waiting() += 1;
        }
        if *round.waiting() == 0 {
            round.finish();
        } else {
            self.rounds.insert(id, round);
        }
    }

    /// Counts in `peer`'s answer to `request` (`None`: the request failed); the last one
    /// awaited finishes the round.
    pub(crate) fn answer(&mut self, request: Id, peer: PeerId, answer: Option<Answered>) {
        let Some(round_id) = self.round_of.remove(&request) else {
            return;
        };
        let Some(round) = self.rounds.get_mut(&round_id) else {
            return;
        };
        round.add(peer, answer);
        *round.waiting() -= 1;
        if *round.waiting() == 0
            && let Some(round) = self.rounds.remove(&round_id)
        {
            round.finish();
        }
    }
}

#[cfg(test)]
mod tests {
    use tokio::sync::oneshot::error::TryRecvError;

    use super::*;

    fn peer() -> PeerId {
        libp2p::identity::Keypair::generate_ed25519()
            .public()
            .to_peer_id()
    }

    fn have(chunks: u32, bits: Vec<u8>, fetching: Vec<u8>) -> Option<Answered> {
        Some(Answered::Have(HaveResponse::Have {
            chunks,
            bits,
            fetching,
            wanting: true,
        }))
    }

    #[test]
    fn a_round_that_asked_nobody_finishes_at_once() {
        let mut rounds = Rounds::<u64>::default();
        let (reply, mut answers) = oneshot::channel();
        rounds.open(Round::have(10, reply), []);
        assert!(answers.try_recv().unwrap().is_empty());
        assert!(rounds.rounds.is_empty());
    }

    #[test]
    fn have_answers_that_do_not_fit_the_chunk_table_are_dropped() {
        let mut rounds = Rounds::<u64>::default();
        let (reply, mut answers) = oneshot::channel();
        rounds.open(Round::have(10, reply), 1..=6);
        let (good, unknown) = (peer(), peer());
        rounds.answer(1, good, have(10, vec![0xff, 0x03], vec![0, 0]));
        // Another table size, too few bytes, spare bits set.
        rounds.answer(2, peer(), have(9, vec![0xff, 0x01], vec![0, 0]));
        rounds.answer(3, peer(), have(10, vec![0xff], vec![0, 0]));
        rounds.answer(4, peer(), have(10, vec![0, 0], vec![0, 0x04]));
        rounds.answer(5, unknown, Some(Answered::Have(HaveResponse::Unknown)));
        assert!(
            matches!(answers.try_recv(), Err(TryRecvError::Empty)),
            "one still out"
        );
        // A failed request counts, a second answer to one request does not.
        rounds.answer(1, peer(), have(10, vec![0xff, 0x03], vec![0, 0]));
        assert!(matches!(answers.try_recv(), Err(TryRecvError::Empty)));
        rounds.answer(6, peer(), None);

        let holdings = answers.try_recv().unwrap();
        assert_eq!(holdings.len(), 2, "{holdings:?}");
        assert_eq!(holdings[0].peer, good.to_string());
        assert_eq!(holdings[0].have, ChunkBits::full(10));
        assert_eq!(holdings[0].fetching, ChunkBits::empty(10));
        assert!(holdings[0].wanting);
        // A peer that does not know the manifest holds nothing and wants nothing.
        assert_eq!(holdings[1].peer, unknown.to_string());
        assert_eq!(holdings[1].have, ChunkBits::empty(10));
        assert!(!holdings[1].wanting);
        assert!(rounds.rounds.is_empty() && rounds.round_of.is_empty());
    }

    #[test]
    fn meta_answers_over_the_limit_or_of_another_kind_are_dropped() {
        let mut rounds = Rounds::<u64>::default();
        let (reply, mut answers) = oneshot::channel();
        rounds.open(Round::meta(6, reply), [10, 11, 12, 13]);
        let holder = peer();
        rounds.answer(10, holder, Some(Answered::Meta(Some(b"signed".to_vec()))));
        rounds.answer(11, peer(), Some(Answered::Meta(Some(b"signed!".to_vec()))));
        rounds.answer(12, peer(), Some(Answered::Meta(None)));
        rounds.answer(13, peer(), Some(Answered::Have(HaveResponse::Unknown)));
        assert_eq!(
            answers.try_recv().unwrap(),
            vec![(holder.to_string(), b"signed".to_vec())]
        );
    }

    #[test]
    fn rounds_are_kept_apart() {
        let mut rounds = Rounds::<u64>::default();
        let (first, mut first_answers) = oneshot::channel();
        let (second, mut second_answers) = oneshot::channel();
        rounds.open(Round::meta(100, first), [1, 2]);
        rounds.open(Round::meta(100, second), [3]);
        let holder = peer();
        rounds.answer(3, holder, Some(Answered::Meta(Some(b"b".to_vec()))));
        assert_eq!(
            second_answers.try_recv().unwrap(),
            vec![(holder.to_string(), b"b".to_vec())]
        );
        assert_eq!(first_answers.try_recv(), Err(TryRecvError::Empty));
        // Answers to requests no round sent are ignored.
        rounds.answer(99, peer(), None);
        rounds.answer(1, peer(), None);
        rounds.answer(2, peer(), None);
        assert_eq!(first_answers.try_recv().unwrap(), Vec::new());
    }
}
