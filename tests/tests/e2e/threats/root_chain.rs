//! Trust through a pinned root chain: thresholds met by one key (or one key listed twice),
//! roots withheld, skipped, expired, oversized, for another product or naming a weak key, and
//! rollback directives (issue 18) that lack the release role's threshold or do not fit the
//! pointer. These cases need the root-chain world ([`super::Bench::with_root_chain`]).

use relsync_engine::directive::RollbackDirective;
use relsync_engine::root::RoleKeys;
use relsync_tests::{V2, pseudo_random};

use super::forgery::{RootKeys, dup, now_unix};
use super::{Case, Category, case};

pub(super) fn cases() -> Vec<Case> {
    use Category::Trust;
    vec![
        case(
            "pointer-same-key-twice",
            Trust,
            &[
                "channel pointer",
                "1 valid signature(s) of trusted keys, 2 needed",
            ],
            |c| {
                let p = c.forge.pointer();
                let k = dup(&c.roots().channel[0]);
                c.forge.write_pointer_signed_by(&p, &[&k, &k]);
            },
        ),
        case(
            "pointer-one-of-two-keys",
            Trust,
            &[
                "channel pointer",
                "1 valid signature(s) of trusted keys, 2 needed",
            ],
            |c| {
                let p = c.forge.pointer();
                let k = dup(&c.roots().channel[1]);
                c.forge.write_pointer_signed_by(&p, &[&k]);
            },
        ),
        case(
            "manifest-same-key-twice",
            Trust,
            &["manifest", "1 valid signature(s) of trusted keys, 2 needed"],
            |c| {
                let (p, m) = c.forge.release();
                let k = dup(&c.roots().release[0]);
                let (_, envelope) = m.seal_by(&[&k, &k]).expect("seal");
                c.forge.publish_envelope(p, &envelope);
            },
        ),
        case(
            "root-one-of-two-root-keys",
            Trust,
            &[
                "root document",
                "1 valid signature(s) of trusted keys, 2 needed",
            ],
            |c| c.publish_root_2(|_| {}, &[0]),
        ),
        case(
            "root-missing-from-chain",
            Trust,
            &["no root document", "keys/root-2"],
            |c| {
                // The pointer names root 3; root 2 is withheld.
                let mut p = c.forge.pointer();
                p.root_version = 3;
                c.forge.write_pointer(&p);
            },
        ),
        case(
            "root-chain-too-long",
            Trust,
            &["names root version 1026", "at most 1024"],
            |c| {
                let mut p = c.forge.pointer();
                p.root_version = 1 + 1025;
                c.forge.write_pointer(&p);
            },
        ),
        case(
            "root-skips-a-version",
            Trust,
            &["root document", "version 3 follows version 1"],
            |c| c.publish_root_2(|r| r.version = 3, &[0, 1]),
        ),
        case(
            "root-other-product",
            Trust,
            &["root document", "for product \"other-app\""],
            |c| c.publish_root_2(|r| r.product = "other-app".into(), &[0, 1]),
        ),
        case(
            "root-expired",
            Trust,
            &["stale metadata", "root document expired"],
            |c| c.publish_root_2(|r| r.expires_unix = now_unix() - 3600, &[0, 1]),
        ),
        case(
            "root-lists-a-key-twice",
            Trust,
            &["root document", "lists a key twice"],
            |c| {
                // A release role whose threshold of 2 one key meets by being listed twice.
                c.publish_root_2(
                    |r| {
                        let k = r.release.keys[0];
                        r.release = RoleKeys {
                            keys: vec![k, k],
                            threshold: 2,
                        };
                    },
                    &[0, 1],
                )
            },
        ),
        // Found by this table: the reason was lost in postcard ("Serde Deserialization
        // Error") until engine/src/decode.rs kept it.
        case("root-weak-key", Trust, &["root document", "weak"], |c| {
            // Root 2's release role names the identity point, a small-order ("weak") key
            // for which one signature verifies many messages.
            let mut root = c.roots().first.clone();
            root.version = 2;
            let body = postcard::to_stdvec(&root).expect("encode root");
            let key = *c.roots().release[0].public().as_bytes();
            let at = body
                .windows(32)
                .position(|w| w == key)
                .expect("the release key in the body");
            let mut identity = [0u8; 32];
            identity[0] = 1;
            let mut body = body;
            body[at..at + 32].copy_from_slice(&identity);
            c.publish_root_2_body(&body, &[0, 1]);
        }),
        // Issue 18: a downgrade needs the release role. Pointers yanking v2 and moving the
        // channel back to v1, as a holder of the channel keys alone can sign them. (Without a
        // directive such a pointer is accepted and moves nobody down: e2e/trust.rs tests that.)
        case(
            "directive-signed-by-the-channel-role",
            Trust,
            &[
                "rollback directive refused",
                "not signed by the release role",
            ],
            |c| c.publish_directive(&c.directive_back(), RootKeys::channel_role),
        ),
        case(
            "directive-one-of-two-release-keys",
            Trust,
            &[
                "rollback directive refused",
                "1 valid signature(s) of trusted keys, 2 needed",
            ],
            |c| c.publish_directive(&c.directive_back(), |k| [&k.release[0], &k.channel[0]]),
        ),
        case(
            "directive-for-another-release",
            Trust,
            &[
                "rollback directive refused",
                "names version 0.9.0, but the channel pointer offers 1.0.0",
            ],
            |c| {
                // Signed by the release role, but for a release the pointer does not offer.
                let directive = RollbackDirective {
                    to_version: "0.9.0".parse().expect("version"),
                    ..c.directive_back()
                };
                c.publish_directive(&directive, RootKeys::release_role);
            },
        ),
        case(
            "directive-from-not-yanked",
            Trust,
            &[
                "rollback directive refused",
                "does not list 3.0.0 as yanked",
            ],
            |c| {
                let directive = RollbackDirective {
                    from: vec![V2.parse().expect("v"), "3.0.0".parse().expect("v")],
                    ..c.directive_back()
                };
                c.publish_directive(&directive, RootKeys::release_role);
            },
        ),
        case(
            "directive-garbage",
            Trust,
            &["rollback directive refused", "malformed envelope"],
            |c| c.publish_yank_back(pseudo_random("directive", 512)),
        ),
        case(
            "directive-over-size-cap",
            Category::Resources,
            &["channel pointer", "16385 bytes, over the 16384-byte limit"],
            |c| {
                let limit = relsync_engine::directive::limits::DIRECTIVE_BYTES;
                c.publish_yank_back(vec![0; limit + 1]);
            },
        ),
        case(
            "root-over-size-cap",
            Category::Resources,
            &["root document", "exceeds the 65536-byte limit"],
            |c| {
                c.forge.put_sparse("keys/root-2", 64 * 1024 + 1);
                let mut p = c.forge.pointer();
                p.root_version = 2;
                c.forge.write_pointer(&p);
            },
        ),
    ]
}
