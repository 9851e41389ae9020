//! outsider-peer: a plain libp2p node from outside the fleet, for the end-to-end tests. It
//! speaks relsync's protocols (the `relsync_peer::wire` codecs) over TCP, Noise and Yamux,
//! as any libp2p node can, but without the fleet's swarm key (or, with `--swarm-key FILE`,
//! under another key). It dials `--server` and, if it ever connects, asks META for `--path`
//! and, given `--manifest`, HAVE for that manifest.
//!
//! `outsider-peer --server MULTIADDR [--path channels/stable] [--manifest ID]
//! [--swarm-key FILE] [--seconds 10]` prints one JSON object: `connected` (whether a
//! connection was ever established), `error` (why the dial failed or the connection closed),
//! `meta_answered` (whether META got an answer), `meta_bytes` (the document's length, or null), `have` (the HAVE answer as debug text, or
//! null) and `failures` (requests that failed). It gives up after `--seconds`.

use std::time::Duration;

use futures_util::StreamExt;
use libp2p::core::upgrade;
use libp2p::pnet::{PnetConfig, PreSharedKey};
use libp2p::request_response::{self, Message, ProtocolSupport};
use libp2p::swarm::{NetworkBehaviour, SwarmEvent};
use libp2p::{Multiaddr, Swarm, SwarmBuilder, Transport, identity, noise, tcp, yamux};
use relsync_engine::ManifestId;
use relsync_peer::wire::{Codec, Have, HaveRequest, Meta, MetaRequest, Protocol};
use serde_json::json;

type Error = Box<dyn std::error::Error + Send + Sync>;

#[derive(NetworkBehaviour)]
struct Behaviour {
    meta: request_response::Behaviour<Codec<Meta>>,
    have: request_response::Behaviour<Codec<Have>>,
}

fn protocol<P: Protocol>() -> request_response::Behaviour<Codec<P>> {
    request_response::Behaviour::new(
        [(P::NAME, ProtocolSupport::Full)],
        request_response::Config::default().with_request_timeout(Duration::from_secs(10)),
    )
}

fn behaviour() -> Behaviour {
    Behaviour {
        meta: protocol::<Meta>(),
        have: protocol::<Have>(),
    }
}

/// A swarm with plain TCP, Noise and Yamux, or with a pnet handshake under `psk` first.
fn swarm(psk: Option<PreSharedKey>) -> Result<Swarm<Behaviour>, Error> {
    let keypair = identity::Keypair::generate_ed25519();
    let idle = |c: libp2p::swarm::Config| c.with_idle_connection_timeout(Duration::from_secs(60));
    let builder = SwarmBuilder::with_existing_identity(keypair.clone()).with_tokio();
    Ok(match psk {
        None => builder
            .with_tcp(
                tcp::Config::default(),
                noise::Config::new,
                yamux::Config::default,
            )?
            .with_behaviour(|_| behaviour())?
            .with_swarm_config(idle)
            .build(),
        Some(psk) => {
            let noise = noise::Config::new(&keypair)?;
            let Ok(builder) = builder.with_other_transport(move |_| {
                tcp::tokio::Transport::new(tcp::Config::default())
                    .and_then(move |socket, _| PnetConfig::new(psk).handshake(socket))
                    .upgrade(upgrade::Version::V1Lazy)
                    .authenticate(noise)
                    .multiplex(yamux::Config::default())
                    .timeout(Duration::from_secs(10))
            });
            builder
                .with_behaviour(|_| behaviour())?
                .with_swarm_config(idle)
                .build()
        }
    })
}

struct Options {
    server: Multiaddr,
    path: String,
    manifest: Option<ManifestId>,
    psk: Option<PreSharedKey>,
    seconds: u64,
}

fn options() -> Result<Options, Error> {
    let mut args = std::env::args().skip(1);
    let mut o = Options {
        server: Multiaddr::empty(),
        path: "channels/stable".into(),
        manifest: None,
        psk: None,
        seconds: 10,
    };
    let mut server = None;
    while let Some(flag) = args.next() {
        let value = args.next().ok_or(format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--server" => server = Some(value.parse::<Multiaddr>()?),
            "--path" => o.path = value,
            "--manifest" => o.manifest = Some(value.parse()?),
            // Read as any key file, mode aside: this is the outsider's own key.
            "--swarm-key" => {
                let text = std::fs::read_to_string(&value)?;
                o.psk = Some(text.parse().map_err(|e| format!("{value}: {e:?}"))?);
            }
            "--seconds" => o.seconds = value.parse()?,
            other => return Err(format!("unknown flag {other}").into()),
        }
    }
    o.server = server.ok_or("--server is required")?;
    Ok(o)
}

async fn run(o: Options) -> Result<serde_json::Value, Error> {
    let mut swarm = swarm(o.psk)?;
    swarm.dial(o.server.clone())?;
    let (mut connected, mut error, mut failures) = (false, None::<String>, Vec::<String>::new());
    let (mut meta, mut have) = (None::<Option<usize>>, None::<String>);
    let mut asked = 0;
    let until = tokio::time::sleep(Duration::from_secs(o.seconds));
    tokio::pin!(until);
    loop {
        let answered = usize::from(meta.is_some()) + usize::from(have.is_some()) + failures.len();
        if (connected && answered >= asked) || (!connected && error.is_some()) {
            break;
        }
        tokio::select! {
            event = swarm.select_next_some() => match event {
                SwarmEvent::ConnectionEstablished { peer_id, .. } => {
                    connected = true;
                    let request = MetaRequest { path: o.path.clone(), limit: None };
                    swarm.behaviour_mut().meta.send_request(&peer_id, request);
                    asked += 1;
                    if let Some(manifest) = o.manifest {
                        let request = HaveRequest { manifest: *manifest.as_bytes() };
                        swarm.behaviour_mut().have.send_request(&peer_id, request);
                        asked += 1;
                    }
                }
                SwarmEvent::OutgoingConnectionError { error: e, .. } => {
                    error = Some(e.to_string());
                }
                SwarmEvent::ConnectionClosed { cause, .. } => {
                    error.get_or_insert(format!("connection closed: {cause:?}"));
                }
                SwarmEvent::Behaviour(BehaviourEvent::Meta(event)) => match event {
                    request_response::Event::Message {
                        message: Message::Response { response, .. },
                        ..
                    } => meta = Some(response.document.map(|d| d.len())),
                    request_response::Event::OutboundFailure { error: e, .. } => {
                        failures.push(format!("META: {e}"));
                    }
                    _ => {}
                },
                SwarmEvent::Behaviour(BehaviourEvent::Have(event)) => match event {
                    request_response::Event::Message {
                        message: Message::Response { response, .. },
                        ..
                    } => have = Some(format!("{response:?}")),
                    request_response::Event::OutboundFailure { error: e, .. } => {
                        failures.push(format!("HAVE: {e}"));
                    }
                    _ => {}
                },
                _ => {}
            },
            () = &mut until => {
                error.get_or_insert(format!("nothing settled within {} s", o.seconds));
                break;
            }
        }
    }
    Ok(json!({
        "connected": connected,
        "error": error,
        "meta_answered": meta.is_some(),
        "meta_bytes": meta.flatten(),
        "have": have,
        "failures": failures,
    }))
}

fn main() -> Result<(), Error> {
    let o = options()?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let summary = runtime.block_on(run(o))?;
    println!("{summary}");
    Ok(())
}
