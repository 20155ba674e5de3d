//! A room's stored settings, pure: who owns it and operates it, who is banned or
//! muted (by account or address mask, with an optional expiry), who is invited, who
//! may join (invite-only, accounts-only, a key), who may speak (moderated) and set the
//! topic (topic lock), and its topic. The hub keeps one per moderated room or room
//! with a topic (it outlives the room's members) and the history store keeps it as
//! JSON, so settings survive restarts.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::chat::{ClientId, RestrictionView, RulesView, Topic};

/// An account, by key (what matches) and name (what is shown).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Named {
    pub key: String,
    pub name: String,
}

/// Whom a ban or a mute covers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Mask {
    /// One account, wherever it connects from.
    Account { key: String, name: String },
    /// Every connection from an address range (`prefix` leading bits of `network`).
    Address { network: IpAddr, prefix: u8 },
}

/// IPv4-mapped IPv6 addresses are IPv4 addresses.
pub fn canonical(address: IpAddr) -> IpAddr {
    match address {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(address, IpAddr::V4),
        v4 => v4,
    }
}

fn masked(address: IpAddr, prefix: u8) -> IpAddr {
    match address {
        IpAddr::V4(v4) => {
            let bits = u32::from(v4);
            let mask = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
            IpAddr::V4((bits & mask).into())
        }
        IpAddr::V6(v6) => {
            let bits = u128::from(v6);
            let mask = u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0);
            IpAddr::V6((bits & mask).into())
        }
    }
}

impl Mask {
    /// An address mask: `203.0.113.7`, `203.0.113.0/24`, `203.0.113.*` (also `203.0.*`
    /// and `203.0.*.*`), `2001:db8::1` or `2001:db8::/48`. `None`: not an address mask.
    pub fn parse_address(text: &str) -> Option<Mask> {
        let (address, prefix) = if let Some((address, bits)) = text.split_once('/') {
            let address = canonical(address.parse().ok()?);
            let most = if address.is_ipv4() { 32 } else { 128 };
            let bits: u8 = bits.parse().ok().filter(|bits| *bits <= most)?;
            (address, bits)
        } else if text.contains('*') {
            let parts: Vec<&str> = text.split('.').collect();
            let fixed = parts.iter().take_while(|part| **part != "*").count();
            let all_stars = parts[fixed..].iter().all(|part| *part == "*");
            if !all_stars || fixed == 0 || parts.len() > 4 {
                return None;
            }
            let mut octets = [0u8; 4];
            for (octet, part) in octets.iter_mut().zip(&parts[..fixed]) {
                *octet = part.parse().ok()?;
            }
            (IpAddr::from(octets), (fixed * 8) as u8)
        } else {
            let address = canonical(text.parse().ok()?);
            let prefix = if address.is_ipv4() { 32 } else { 128 };
            (address, prefix)
        };
        Some(Mask::Address {
            network: masked(address, prefix),
            prefix,
        })
    }

    /// The mask that covers one connection's address: the address itself for IPv4,
    /// its /64 for IPv6 (a host usually has a whole /64).
    pub fn for_address(address: IpAddr) -> Mask {
        let address = canonical(address);
        let prefix = if address.is_ipv4() { 32 } else { 64 };
        Mask::Address {
            network: masked(address, prefix),
            prefix,
        }
    }

    pub fn matches(&self, account: Option<&str>, address: IpAddr) -> bool {
        match self {
            Mask::Account { key, .. } => account == Some(key.as_str()),
            Mask::Address { network, prefix } => {
                let address = canonical(address);
                address.is_ipv4() == network.is_ipv4() && masked(address, *prefix) == *network
            }
        }
    }

    /// How it is written: `account:NAME`, an address, or `network/prefix`.
    pub fn describe(&self) -> String {
        match self {
            Mask::Account { name, .. } => format!("account:{name}"),
            Mask::Address { network, prefix }
                if *prefix == if network.is_ipv4() { 32 } else { 128 } =>
            {
                network.to_string()
            }
            Mask::Address { network, prefix } => format!("{network}/{prefix}"),
        }
    }
}

pub fn unix_ms(time: SystemTime) -> i64 {
    time.duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

fn from_unix_ms(ms: i64) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(u64::try_from(ms).unwrap_or(0))
}

/// One ban or mute.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Restriction {
    pub mask: Mask,
    /// How it is shown instead of the mask: set when the target was a guest named by
    /// its nickname, so the guest's address is never shown to anyone (`NICK (guest)`).
    #[serde(default)]
    pub label: Option<String>,
    /// Who set it (their name then).
    pub by: String,
    /// Their rank then: only someone of that rank or above lifts it.
    #[serde(default = "operator_rank")]
    pub by_rank: Rank,
    pub reason: Option<String>,
    /// `None`: until lifted.
    pub expires_ms: Option<i64>,
}

fn operator_rank() -> Rank {
    Rank::Operator
}

impl Restriction {
    pub fn live(&self, now: SystemTime) -> bool {
        self.expires_ms.is_none_or(|expires| expires > unix_ms(now))
    }

    /// The label, or the mask written out.
    pub fn shown(&self) -> String {
        self.label.clone().unwrap_or_else(|| self.mask.describe())
    }

    pub fn view(&self) -> RestrictionView {
        RestrictionView {
            target: self.shown(),
            by: self.by.as_str().into(),
            reason: self.reason.as_deref().map(Into::into),
            expires: self.expires_ms.map(from_unix_ms),
        }
    }

    /// ` until 2026-12-07 10:00:00 UTC (reason)`, for refusals.
    pub fn explain(&self) -> String {
        let mut text = String::new();
        if let Some(expires) = self.expires_ms {
            // Rounded up: a fresh 1h ban reads "1h", not "59m 59s".
            let left = ((expires - unix_ms(SystemTime::now())).max(0) + 999) / 1000;
            text.push_str(&format!(" for {} more", describe_duration(left as u64)));
        }
        if let Some(reason) = &self.reason {
            text.push_str(&format!(" ({reason})"));
        }
        text
    }
}

/// `90` → `1m 30s`; `7200` → `2h`.
pub fn describe_duration(seconds: u64) -> String {
    let units = [(86_400, "d"), (3600, "h"), (60, "m"), (1, "s")];
    let mut left = seconds;
    let mut parts = Vec::new();
    for (size, unit) in units {
        if left >= size {
            parts.push(format!("{}{unit}", left / size));
            left %= size;
        }
        if parts.len() == 2 {
            break;
        }
    }
    if parts.is_empty() {
        "0s".into()
    } else {
        parts.join(" ")
    }
}

/// Where someone stands in a room, lowest first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Rank {
    Member,
    Operator,
    Owner,
    /// Named in the server's configuration: moderates everywhere.
    ServerOperator,
}

/// One room's rules.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RoomRules {
    /// The room's name as shown (the hub's key is its folded form).
    pub name: String,
    /// The account that created the room.
    pub owner: Option<Named>,
    pub operators: Vec<Named>,
    pub bans: Vec<Restriction>,
    pub mutes: Vec<Restriction>,
    pub invite_only: bool,
    pub registered_only: bool,
    /// The key (`+k`) a join must give unless invited (`None`: none). Shown only to
    /// the room's operators, and never logged. Older rows have none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// Only the owner, operators and server operators speak (`+m`). Older rows: off.
    #[serde(default)]
    pub moderated: bool,
    /// Who sets the topic (`+t`), where it differs from the default
    /// ([`RoomRules::topic_locked`]): `Some(false)` opens an owned room's topic to its
    /// members, `Some(true)` locks a room without an owner. Kept as a difference, not
    /// as the setting, so rows stored before the mode existed (none) behave as they
    /// did, and a room back at its defaults has nothing to keep.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub topic_lock: Option<bool>,
    /// Accounts let into an invite-only room.
    pub invited: Vec<Named>,
    /// Guests let in, for as long as they are connected (a guest's name is anyone's
    /// afterwards, so their invitations are not kept).
    #[serde(skip)]
    pub invited_guests: Vec<ClientId>,
    /// What the room is about. Kept here, with the rest of what is stored about the
    /// room, so it survives restarts; older rows have none.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "stored_topic"
    )]
    pub topic: Option<Arc<Topic>>,
}

/// A topic in its stored form: text, who set it, and when (ms since the epoch).
mod stored_topic {
    use super::*;
    use serde::{Deserializer, Serializer};

    #[derive(Serialize, Deserialize)]
    struct Form {
        text: String,
        set_by: String,
        time_ms: i64,
    }

    pub fn serialize<S: Serializer>(topic: &Option<Arc<Topic>>, to: S) -> Result<S::Ok, S::Error> {
        let form = topic.as_ref().map(|topic| Form {
            text: topic.text.to_string(),
            set_by: topic.set_by.to_string(),
            time_ms: unix_ms(topic.time),
        });
        form.serialize(to)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(from: D) -> Result<Option<Arc<Topic>>, D::Error> {
        let form = Option::<Form>::deserialize(from)?;
        Ok(form.map(|form| {
            Arc::new(Topic {
                text: form.text.into(),
                set_by: form.set_by.into(),
                time: from_unix_ms(form.time_ms),
            })
        }))
    }
}

impl RoomRules {
    pub fn rank_of(&self, account: Option<&str>) -> Rank {
        let Some(account) = account else {
            return Rank::Member;
        };
        if self
            .owner
            .as_ref()
            .is_some_and(|owner| owner.key == account)
        {
            Rank::Owner
        } else if self.operators.iter().any(|op| op.key == account) {
            Rank::Operator
        } else {
            Rank::Member
        }
    }

    pub fn ban_of(&self, account: Option<&str>, address: IpAddr) -> Option<&Restriction> {
        let now = SystemTime::now();
        self.bans
            .iter()
            .find(|ban| ban.live(now) && ban.mask.matches(account, address))
    }

    pub fn mute_of(&self, account: Option<&str>, address: IpAddr) -> Option<&Restriction> {
        let now = SystemTime::now();
        self.mutes
            .iter()
            .find(|mute| mute.live(now) && mute.mask.matches(account, address))
    }

    /// Only the owner and operators set the topic (`+t`): by default in a room with an
    /// owner (it was always so there), not in one without (anyone sets the topic of a
    /// guest's room), unless an operator chose otherwise.
    pub fn topic_locked(&self) -> bool {
        self.topic_lock.unwrap_or(self.owner.is_some())
    }

    /// Lock (`+t`) or open (`-t`) the topic, kept as a difference from the default.
    pub fn lock_topic(&mut self, locked: bool) {
        self.topic_lock = (locked != self.owner.is_some()).then_some(locked);
    }

    /// Does `given` open the room? Any key opens a room without one.
    pub fn key_fits(&self, given: Option<&str>) -> bool {
        self.key
            .as_deref()
            .is_none_or(|key| given.is_some_and(|given| given == key))
    }

    pub fn is_invited(&self, account: Option<&str>, client: ClientId) -> bool {
        self.invited_guests.contains(&client)
            || account.is_some_and(|key| self.invited.iter().any(|named| named.key == key))
    }

    /// The bans (`true`) or the mutes.
    pub fn list(&self, bans: bool) -> &[Restriction] {
        if bans {
            &self.bans
        } else {
            &self.mutes
        }
    }

    pub fn list_mut(&mut self, bans: bool) -> &mut Vec<Restriction> {
        if bans {
            &mut self.bans
        } else {
            &mut self.mutes
        }
    }

    /// Set `restriction` in `list` (bans or mutes), replacing one for the same mask.
    pub fn restrict(list: &mut Vec<Restriction>, restriction: Restriction) {
        list.retain(|old| old.mask != restriction.mask);
        list.push(restriction);
    }

    /// Take what `list` holds for `mask`, if anything.
    pub fn lift(list: &mut Vec<Restriction>, mask: &Mask) -> Option<Restriction> {
        let index = list.iter().position(|old| old.mask == *mask)?;
        Some(list.remove(index))
    }

    /// The one in `list` shown as `label` (a guest's, by the nickname it had).
    pub fn labelled<'a>(list: &'a [Restriction], label: &str) -> Option<&'a Restriction> {
        let wanted = crate::text::nick_key(label);
        list.iter().find(|item| {
            item.label
                .as_deref()
                .and_then(|shown| shown.strip_suffix(" (guest)"))
                .is_some_and(|nick| crate::text::nick_key(nick) == wanted)
        })
    }

    /// Take `account` out of these rules (it was dropped: its name may go to someone
    /// else); `true` if anything changed.
    pub fn forget_account(&mut self, account: &str) -> bool {
        let before = (
            self.owner.is_some(),
            self.operators.len(),
            self.invited.len(),
            self.bans.len() + self.mutes.len(),
        );
        if self
            .owner
            .as_ref()
            .is_some_and(|owner| owner.key == account)
        {
            self.owner = None;
        }
        self.operators.retain(|op| op.key != account);
        self.invited.retain(|named| named.key != account);
        let of_account =
            |item: &Restriction| matches!(&item.mask, Mask::Account { key, .. } if key == account);
        self.bans.retain(|ban| !of_account(ban));
        self.mutes.retain(|mute| !of_account(mute));
        before
            != (
                self.owner.is_some(),
                self.operators.len(),
                self.invited.len(),
                self.bans.len() + self.mutes.len(),
            )
    }

    /// Forget expired bans and mutes; `true` if any went.
    pub fn prune(&mut self, now: SystemTime) -> bool {
        let before = self.bans.len() + self.mutes.len();
        self.bans.retain(|ban| ban.live(now));
        self.mutes.retain(|mute| mute.live(now));
        before != self.bans.len() + self.mutes.len()
    }

    /// Nothing worth keeping: the stored copy can go.
    pub fn is_empty(&self) -> bool {
        self.is_unmoderated() && self.topic.is_none()
    }

    /// Nothing moderates the room (it may have a topic): the account that makes it
    /// anew owns it.
    pub fn is_unmoderated(&self) -> bool {
        self.owner.is_none()
            && self.operators.is_empty()
            && self.bans.is_empty()
            && self.mutes.is_empty()
            && !self.invite_only
            && !self.registered_only
            && self.key.is_none()
            && !self.moderated
            && self.topic_lock.is_none()
            && self.invited.is_empty()
    }

    /// What members see; the key itself only with `show_key` (to operators).
    pub fn view(&self, show_key: bool) -> RulesView {
        let now = SystemTime::now();
        let live = |list: &[Restriction]| -> Vec<RestrictionView> {
            list.iter()
                .filter(|item| item.live(now))
                .map(Restriction::view)
                .collect()
        };
        RulesView {
            room: self.name.as_str().into(),
            owner: self.owner.as_ref().map(|owner| owner.name.as_str().into()),
            operators: self
                .operators
                .iter()
                .map(|op| op.name.as_str().into())
                .collect(),
            invite_only: self.invite_only,
            registered_only: self.registered_only,
            has_key: self.key.is_some(),
            key: self.key.as_deref().filter(|_| show_key).map(Into::into),
            moderated: self.moderated,
            topic_locked: self.topic_locked(),
            bans: live(&self.bans),
            mutes: live(&self.mutes),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn address_masks_in_every_spelling() {
        for (text, inside, outside, shown) in [
            ("203.0.113.7", "203.0.113.7", "203.0.113.8", "203.0.113.7"),
            (
                "203.0.113.0/24",
                "203.0.113.200",
                "203.0.114.1",
                "203.0.113.0/24",
            ),
            (
                "203.0.113.9/24",
                "203.0.113.1",
                "203.0.112.1",
                "203.0.113.0/24",
            ),
            (
                "203.0.113.*",
                "203.0.113.5",
                "203.0.112.5",
                "203.0.113.0/24",
            ),
            ("10.*.*", "10.200.1.2", "11.0.0.1", "10.0.0.0/8"),
            (
                "2001:db8::/48",
                "2001:db8:0:ffff::1",
                "2001:db8:1::1",
                "2001:db8::/48",
            ),
            ("::ffff:192.0.2.1", "192.0.2.1", "192.0.2.2", "192.0.2.1"),
        ] {
            let mask = Mask::parse_address(text).unwrap_or_else(|| panic!("{text}"));
            assert!(mask.matches(None, ip(inside)), "{text} covers {inside}");
            assert!(!mask.matches(None, ip(outside)), "{text} spares {outside}");
            assert_eq!(mask.describe(), shown);
        }
        // IPv4 masks never cover IPv6 addresses, and the reverse.
        let v4 = Mask::parse_address("0.0.0.0/0").unwrap();
        assert!(v4.matches(None, ip("8.8.8.8")));
        assert!(!v4.matches(None, ip("2001:db8::1")));
        for bad in [
            "alice",
            "203.0.113.0/33",
            "2001:db8::/129",
            "*.0.113.1",
            "203.*.113.1",
            "1.2.3.4.*",
            "300.1.1.*",
            "",
        ] {
            assert_eq!(Mask::parse_address(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn a_connection_is_covered_by_its_address_or_its_64() {
        let v6 = Mask::for_address(ip("2001:db8:1:2:aaaa::1"));
        assert!(v6.matches(None, ip("2001:db8:1:2:bbbb::9")));
        assert!(!v6.matches(None, ip("2001:db8:1:3::1")));
        assert_eq!(Mask::for_address(ip("127.0.0.2")).describe(), "127.0.0.2");
    }

    #[test]
    fn bans_and_mutes_expire_and_are_replaced_not_duplicated() {
        let mut rules = RoomRules::default();
        let alice = Mask::Account {
            key: "allce".into(),
            name: "alice".into(),
        };
        let past = unix_ms(SystemTime::now()) - 1;
        let ban = |expires_ms| Restriction {
            mask: alice.clone(),
            label: None,
            by: "op".into(),
            by_rank: Rank::Operator,
            reason: None,
            expires_ms,
        };
        RoomRules::restrict(&mut rules.bans, ban(Some(past)));
        assert!(rules.ban_of(Some("allce"), ip("127.0.0.1")).is_none());
        RoomRules::restrict(&mut rules.bans, ban(None));
        assert_eq!(rules.bans.len(), 1);
        assert!(rules.ban_of(Some("allce"), ip("127.0.0.1")).is_some());
        assert!(rules.ban_of(Some("bob"), ip("127.0.0.1")).is_none());
        assert!(RoomRules::lift(&mut rules.bans, &alice).is_some());
        assert!(RoomRules::lift(&mut rules.bans, &alice).is_none());
        RoomRules::restrict(&mut rules.mutes, ban(Some(past)));
        assert!(rules.prune(SystemTime::now()));
        assert!(rules.is_empty());
    }

    #[test]
    fn rules_survive_a_round_trip_through_json_except_guest_invitations() {
        let mut rules = RoomRules {
            name: "#ops".into(),
            owner: Some(Named {
                key: "allce".into(),
                name: "alice".into(),
            }),
            invite_only: true,
            key: Some("sesame".into()),
            invited_guests: vec![7],
            ..RoomRules::default()
        };
        RoomRules::restrict(
            &mut rules.bans,
            Restriction {
                mask: Mask::parse_address("203.0.113.0/24").unwrap(),
                label: None,
                by: "alice".into(),
                by_rank: Rank::Owner,
                reason: Some("spam".into()),
                expires_ms: Some(1_900_000_000_000),
            },
        );
        let text = serde_json::to_string(&rules).unwrap();
        let back: RoomRules = serde_json::from_str(&text).unwrap();
        rules.invited_guests.clear();
        assert_eq!(back, rules);
        assert_eq!(back.rank_of(Some("allce")), Rank::Owner);
        assert_eq!(back.rank_of(None), Rank::Member);
        // A row stored before keys existed loads, with no key.
        let old: RoomRules = serde_json::from_str(
            r##"{"name":"#old","owner":null,"operators":[],"bans":[],"mutes":[],
                "invite_only":false,"registered_only":true,"invited":[]}"##,
        )
        .unwrap();
        assert_eq!(old.key, None);
        assert_eq!(old.topic, None);
        assert!(old.registered_only);
        // ... and, stored before +m and +t, is not moderated and keeps the topic as it
        // was: locked in an owned room, open in one without an owner.
        assert!(!old.moderated && !old.topic_locked());
        let owned: RoomRules = serde_json::from_str(
            r##"{"name":"#den","owner":{"key":"allce","name":"alice"},"operators":[],
                "bans":[],"mutes":[],"invite_only":false,"registered_only":false,
                "key":"sesame","invited":[]}"##,
        )
        .unwrap();
        assert!(!owned.moderated && owned.topic_locked());
        assert_eq!(owned.topic_lock, None);
    }

    #[test]
    fn moderated_and_topic_lock_are_kept_and_the_lock_as_a_difference_from_the_default() {
        let mut rules = RoomRules {
            name: "#den".into(),
            owner: Some(Named {
                key: "allce".into(),
                name: "alice".into(),
            }),
            moderated: true,
            ..RoomRules::default()
        };
        assert!(rules.topic_locked() && rules.view(false).topic_locked);
        assert!(rules.view(false).moderated);
        // -t opens an owned room's topic; +t is its default again, nothing to keep.
        rules.lock_topic(false);
        assert_eq!(rules.topic_lock, Some(false));
        assert!(!rules.topic_locked() && !rules.view(false).topic_locked);
        let text = serde_json::to_string(&rules).unwrap();
        assert!(text.contains(r#""moderated":true"#), "{text}");
        assert!(text.contains(r#""topic_lock":false"#), "{text}");
        let back: RoomRules = serde_json::from_str(&text).unwrap();
        assert_eq!(back, rules);
        rules.lock_topic(true);
        assert_eq!(rules.topic_lock, None);
        assert!(rules.topic_locked());
        assert!(!serde_json::to_string(&rules)
            .unwrap()
            .contains("topic_lock"));

        // A room without an owner: open by default, +t locks it (for server operators),
        // and either mode alone is moderation worth keeping.
        let mut guests = RoomRules {
            name: "#cafe".into(),
            ..RoomRules::default()
        };
        assert!(!guests.topic_locked() && guests.is_empty());
        guests.lock_topic(true);
        assert!(guests.topic_locked() && !guests.is_unmoderated());
        guests.lock_topic(false);
        assert!(guests.is_empty());
        guests.moderated = true;
        assert!(!guests.is_unmoderated());
    }

    #[test]
    fn a_topic_alone_is_kept_and_does_not_moderate() {
        let mut rules = RoomRules {
            name: "#news".into(),
            ..RoomRules::default()
        };
        let set = UNIX_EPOCH + Duration::from_millis(1_763_790_000_123);
        rules.topic = Some(Arc::new(Topic {
            text: "release on Friday".into(),
            set_by: "alice".into(),
            time: set,
        }));
        assert!(rules.is_unmoderated() && !rules.is_empty());
        let text = serde_json::to_string(&rules).unwrap();
        assert!(
            text.contains(
                r#""topic":{"text":"release on Friday","set_by":"alice","time_ms":1763790000123}"#
            ),
            "{text}"
        );
        let back: RoomRules = serde_json::from_str(&text).unwrap();
        assert_eq!(back, rules);
        rules.topic = None;
        assert!(rules.is_empty());
        assert!(!serde_json::to_string(&rules).unwrap().contains("topic"));
    }

    #[test]
    fn a_key_opens_only_its_room_and_only_operators_see_it() {
        let mut rules = RoomRules {
            name: "#vault".into(),
            ..RoomRules::default()
        };
        assert!(rules.key_fits(None) && rules.key_fits(Some("anything")));
        rules.key = Some("Sesame".into());
        assert!(!rules.is_empty());
        assert!(rules.key_fits(Some("Sesame")));
        for wrong in [None, Some(""), Some("sesame"), Some("Sesame ")] {
            assert!(!rules.key_fits(wrong), "{wrong:?}");
        }
        let member = rules.view(false);
        assert!(member.has_key);
        assert_eq!(member.key, None);
        assert_eq!(rules.view(true).key.as_deref(), Some("Sesame"));
        rules.key = None;
        assert!(rules.is_empty());
        assert!(!rules.view(true).has_key);
    }

    #[test]
    fn a_dropped_account_leaves_no_trace_in_a_rooms_rules() {
        let named = |key: &str| Named {
            key: key.into(),
            name: key.into(),
        };
        let mut rules = RoomRules {
            owner: Some(named("alice")),
            operators: vec![named("alice"), named("bob")],
            invited: vec![named("alice")],
            ..RoomRules::default()
        };
        let ban = |key: &str| Restriction {
            mask: Mask::Account {
                key: key.into(),
                name: key.into(),
            },
            label: None,
            by: "bob".into(),
            by_rank: Rank::Operator,
            reason: None,
            expires_ms: None,
        };
        RoomRules::restrict(&mut rules.bans, ban("alice"));
        RoomRules::restrict(&mut rules.bans, ban("carol"));
        assert!(rules.forget_account("alice"));
        assert_eq!(rules.owner, None);
        assert_eq!(rules.operators, vec![named("bob")]);
        assert!(rules.invited.is_empty());
        assert_eq!(rules.bans, vec![ban("carol")]);
        assert!(!rules.forget_account("alice"));
    }

    #[test]
    fn durations_read_like_people_write_them() {
        assert_eq!(describe_duration(90), "1m 30s");
        assert_eq!(describe_duration(7200), "2h");
        assert_eq!(describe_duration(0), "0s");
        assert_eq!(describe_duration(86_400 + 3600 + 5), "1d 1h");
    }
}
