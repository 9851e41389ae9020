//! Trust: signed metadata that is well formed but must not be believed. Rollbacks,
//! equivocation, expiry, documents replayed across channels or products, foreign or missing
//! signatures, and documents of the wrong kind or a future format.

use relsync_engine::SecretKey;
use relsync_engine::manifest::Manifest;

use super::forgery::now_unix;
use super::{Case, Category, case};

pub(super) fn cases() -> Vec<Case> {
    use Category::Trust;
    vec![
        case(
            "pointer-rollback",
            Trust,
            &["rollback refused", "0.9.0"],
            |c| {
                // A well-signed older release: v1's tree as 0.9.0.
                let mut p = c.forge.pointer();
                let m = Manifest {
                    version: "0.9.0".parse().expect("v"),
                    ..c.forge.manifest(&c.facts.v1)
                };
                p.version = m.version.clone();
                c.forge.publish(p, &m);
            },
        ),
        case(
            "pointer-equivocation",
            Trust,
            &["manifest for an already trusted version mismatch"],
            |c| {
                // 1.0.0 again (the version the install trusts) naming a different manifest.
                let (mut p, _) = c.forge.release();
                let mut m = c.forge.manifest(&c.facts.v1);
                m.created_unix += 1;
                p.version = m.version.clone();
                c.forge.publish(p, &m);
            },
        ),
        case(
            "pointer-expired",
            Trust,
            &["stale metadata", "channel pointer expired"],
            |c| {
                let mut p = c.forge.pointer();
                p.expires_unix = now_unix() - 3600;
                c.forge.write_pointer(&p);
            },
        ),
        case(
            "manifest-expired",
            Trust,
            &["stale metadata", "manifest expired"],
            |c| {
                let (p, mut m) = c.forge.release();
                m.expires_unix = now_unix() - 3600;
                c.forge.publish(p, &m);
            },
        )
        .fresh(),
        case(
            "pointer-other-channel",
            Trust,
            &["channel mismatch", "beta"],
            |c| {
                // A pointer signed for channel beta, replayed as stable.
                let (mut p, mut m) = c.forge.release();
                p.channel = "beta".into();
                m.channel = "beta".into();
                c.forge.publish(p, &m);
            },
        ),
        case(
            "pointer-other-product",
            Trust,
            &["product mismatch", "other-app"],
            |c| {
                // Another product signed by the same key, swapped in.
                let (mut p, mut m) = c.forge.release();
                p.product = "other-app".into();
                m.product = "other-app".into();
                c.forge.publish(p, &m);
            },
        ),
        case(
            "fresh-install-of-another-product",
            Trust,
            &["product mismatch", "other-app"],
            |c| {
                // The origin (or anyone in the path) swaps in another product the same key
                // signed: a fresh install names the product it wants, so it refuses.
                let (mut p, mut m) = c.forge.release();
                p.product = "other-app".into();
                m.product = "other-app".into();
                c.forge.publish(p, &m);
            },
        )
        .fresh(),
        case(
            "manifest-channel-disagrees",
            Trust,
            &["manifest channel mismatch", "beta"],
            |c| {
                let (p, mut m) = c.forge.release();
                m.channel = "beta".into();
                c.forge.publish(p, &m);
            },
        ),
        case(
            "manifest-product-disagrees",
            Trust,
            &["manifest product mismatch", "other-app"],
            |c| {
                let (p, mut m) = c.forge.release();
                m.product = "other-app".into();
                c.forge.publish(p, &m);
            },
        ),
        case(
            "manifest-version-disagrees",
            Trust,
            &["manifest version mismatch", "1.9.0"],
            |c| {
                let (p, mut m) = c.forge.release();
                m.version = "1.9.0".parse().expect("v");
                c.forge.publish(p, &m);
            },
        ),
        case(
            "pointer-attacker-key",
            Trust,
            &["bad signature on channel pointer", "unknown key"],
            |c| {
                let attacker = SecretKey::generate().expect("key");
                let p = c.forge.pointer();
                c.forge.write_pointer_signed_by(&p, &[&attacker]);
            },
        ),
        case(
            "pointer-unsigned",
            Trust,
            &[
                "bad signature on channel pointer",
                "not signed by any trusted key",
            ],
            |c| {
                let p = c.forge.pointer();
                c.forge.write_pointer_signed_by(&p, &[]);
            },
        ),
        case(
            "pointer-edited-after-signing",
            Trust,
            &["bad signature on channel pointer", "does not verify"],
            |c| {
                // The signed pointer with its version bumped in place, signature kept.
                let path = c.forge.pointer_path();
                let mut bytes = c.forge.read(&path);
                let at = bytes
                    .windows(5)
                    .position(|w| w == b"2.0.0")
                    .expect("the version in the pointer");
                bytes[at] = b'9';
                c.forge.put(&path, &bytes);
            },
        ),
        case(
            "manifest-attacker-key",
            Trust,
            &["bad signature on manifest", "unknown key"],
            |c| {
                let attacker = SecretKey::generate().expect("key");
                let (p, m) = c.forge.release();
                let (_, envelope) = m.seal_by(&[&attacker]).expect("seal");
                c.forge.publish_envelope(p, &envelope);
            },
        ),
        case(
            "manifest-served-as-pointer",
            Trust,
            &["channel pointer", "wrong document kind"],
            |c| {
                // A manifest envelope signed by the trusted key, served as the pointer.
                let envelope = c.forge.envelope(&c.facts.v2);
                let path = c.forge.pointer_path();
                c.forge.put(&path, &envelope);
            },
        ),
        case(
            "manifest-substituted",
            Trust,
            &["does not match its bytes"],
            |c| {
                // The delta the client fetches now decodes to v1's (validly signed) manifest.
                let v1 = c.forge.envelope(&c.facts.v1);
                let delta =
                    relsync_engine::manifest::compress_envelope_delta(&v1, &v1).expect("delta");
                let path = c.delta_path();
                c.forge.put(&path, &delta);
            },
        ),
        case(
            "pointer-future-format",
            Trust,
            &["channel pointer", "unsupported format"],
            |c| {
                let mut p = c.forge.pointer();
                p.format = relsync_engine::manifest::FORMAT_VERSION + 1;
                c.forge.write_pointer(&p);
            },
        ),
    ]
}
