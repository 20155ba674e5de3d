//! Moderation on the hub: who may join, speak and set a topic in a moderated room,
//! and the owner's, operators' and server operators' requests (kick, ban, mute, op,
//! invite, modes and keys, kill). Every change is announced to the room as an action
//! message from the moderator (kept in history like any message, with the details under
//! `data.moderation`), counted, and handed to the store so it survives restarts.

use std::net::IpAddr;

use super::commands::{Outcome, Refusal};
use super::rules::{describe_duration, unix_ms, Mask, Named, Rank, Restriction, RoomRules};
use super::*;
use crate::text::key_problem;
use serde_json::json;

/// Longest a ban or mute with a duration may last (longer: leave it out, until lifted).
const MAX_RESTRICTION: Duration = Duration::from_secs(10 * 365 * 86_400);

/// Longest reason kept with a kick, ban or mute.
const MAX_REASON_CHARS: usize = 300;

fn not_operator(room: &str) -> Refusal {
    let why = format!("only {room}'s owner and operators (or a server operator) can do that");
    Refusal::new(ErrorCode::NotOperator, why).about(room)
}

fn reason_text(reason: Option<String>) -> Result<Option<String>, Refusal> {
    let Some(reason) = reason else {
        return Ok(None);
    };
    let reason = sanitize_text(reason.trim()).into_owned();
    if reason.chars().count() > MAX_REASON_CHARS {
        let why = format!("the reason is longer than {MAX_REASON_CHARS} characters");
        return Err(Refusal::new(ErrorCode::BadRequest, why));
    }
    Ok((!reason.is_empty()).then_some(reason))
}

/// Who a target is, resolved by the hub.
struct Resolved {
    mask: Mask,
    /// How it is shown, for a guest named by nickname (its address stays private).
    label: Option<String>,
    /// Its rank in the room (an address mask: a member's).
    rank: Rank,
}

impl Hub {
    fn account_key(&self, id: ClientId) -> Option<&str> {
        self.clients.get(&id)?.account.as_ref().map(|a| &*a.key)
    }

    fn rank_of_account(&self, account: Option<&str>, key: &str) -> Rank {
        if account.is_some_and(|account| self.config.operators.contains(account)) {
            return Rank::ServerOperator;
        }
        self.rules
            .get(key)
            .map_or(Rank::Member, |rules| rules.rank_of(account))
    }

    pub(super) fn rank(&self, id: ClientId, key: &str) -> Rank {
        self.rank_of_account(self.account_key(id), key)
    }

    pub(super) fn is_server_operator(&self, id: ClientId) -> bool {
        self.account_key(id)
            .is_some_and(|account| self.config.operators.contains(account))
    }

    /// May `id` join room `key` (`name` as shown), giving `room_key`? Owners,
    /// operators and server operators always may. An invitation lets one past both
    /// invite-only and the room's key (as on IRC servers: an operator who invites
    /// someone means them to come in), not past a ban or accounts-only.
    pub(super) fn may_join(
        &self,
        id: ClientId,
        key: &str,
        name: &str,
        room_key: Option<&str>,
    ) -> Outcome {
        let Some(rules) = self.rules.get(key) else {
            return Ok(());
        };
        if self.rank(id, key) >= Rank::Operator {
            return Ok(());
        }
        let client = &self.clients[&id];
        let account = client.account.as_ref().map(|a| &*a.key);
        if let Some(ban) = rules.ban_of(account, client.address) {
            let why = format!("you are banned from {name}{}", ban.explain());
            return Err(Refusal::new(ErrorCode::Banned, why).about(name));
        }
        if rules.registered_only && account.is_none() {
            // Each door's renderer adds how to sign in, in its own commands.
            let why = format!("{name} is for accounts only: sign in first");
            return Err(Refusal::new(ErrorCode::RegisteredOnly, why).about(name));
        }
        let invited = rules.is_invited(account, id);
        if rules.invite_only && !invited {
            let why = format!("{name} is invite-only; ask one of its operators for an invitation");
            return Err(Refusal::new(ErrorCode::InviteOnly, why).about(name));
        }
        if !invited && !rules.key_fits(room_key) {
            // Which of the two is said, never the key.
            let why = match room_key {
                None => format!("{name} needs a key (+k): join it with the key"),
                Some(_) => format!("that is not {name}'s key (+k)"),
            };
            return Err(Refusal::new(ErrorCode::BadKey, why).about(name));
        }
        Ok(())
    }

    /// May `id`, a member, speak in room `key` (say, act, notice, send telemetry)? Not
    /// if it is muted there, nor in a moderated room (`+m`) unless it moderates it;
    /// both are `muted`, the refusal a client already knows for "you may not speak".
    pub(super) fn may_speak(&self, id: ClientId, key: &str) -> Outcome {
        let Some(rules) = self.rules.get(key) else {
            return Ok(());
        };
        let client = &self.clients[&id];
        let account = client.account.as_ref().map(|a| &*a.key);
        let mute = rules.mute_of(account, client.address);
        // The rank is looked up only when something would hold the speaker back.
        if (mute.is_none() && !rules.moderated) || self.rank(id, key) >= Rank::Operator {
            return Ok(());
        }
        let why = match mute {
            Some(mute) => format!("you are muted in {}{}", rules.name, mute.explain()),
            None => format!(
                "{} is moderated (+m): only its owner and operators (or a server operator) \
                 may speak there",
                rules.name
            ),
        };
        Err(Refusal::new(ErrorCode::Muted, why).about(&rules.name))
    }

    /// `id` just joined room `key`: an invitation it came in with is used up (as on
    /// IRC), so a kicked guest cannot walk straight back into an invite-only or keyed
    /// room.
    pub(super) fn use_invitation(&mut self, id: ClientId, key: &str) {
        let account = self.account_key(id).map(str::to_owned);
        let Some(rules) = self
            .rules
            .get_mut(key)
            .filter(|rules| rules.invite_only || rules.key.is_some())
        else {
            return;
        };
        rules.invited_guests.retain(|guest| *guest != id);
        let before = rules.invited.len();
        if let Some(account) = account {
            rules.invited.retain(|named| named.key != account);
        }
        if rules.invited.len() != before {
            self.save_rules(key);
        }
    }

    /// `id` just signed in: bans on its account now apply in the rooms it is in.
    pub(super) fn enforce_bans(&mut self, id: ClientId) {
        let Some(client) = self.clients.get(&id) else {
            return;
        };
        let account = client.account.as_ref().map(|a| a.key.to_string());
        let address = client.address;
        let rooms: Vec<String> = client.rooms.iter().map(|m| m.key.clone()).collect();
        for key in rooms {
            let banned = self.rules.get(&key).and_then(|rules| {
                rules.ban_of(account.as_deref(), address).map(|ban| {
                    let why = format!("banned by {}{}", ban.by, ban.explain());
                    (why, Arc::<str>::from(ban.by.as_str()))
                })
            });
            if let Some((why, by)) = banned.filter(|_| self.rank(id, &key) < Rank::Operator) {
                self.put_out(id, &key, &why, &by);
            }
        }
    }

    /// The account `key` was dropped: whoever registers its name next must not
    /// inherit its rooms, its operator status or its bans.
    pub(super) fn forget_account_rules(&mut self, key: &str) {
        let changed: Vec<String> = self
            .rules
            .iter_mut()
            .filter_map(|(room, rules)| rules.forget_account(key).then(|| room.clone()))
            .collect();
        for room in changed {
            self.save_rules(&room);
        }
        if self.config.operators.contains(key) {
            tracing::warn!(
                account = key,
                "a server operator's account was dropped: whoever registers the name next \
                 is a server operator; take it out of --operator"
            );
        }
    }

    /// In a room whose topic is locked (`+t`: by default, a room with an owner) only
    /// its operators set the topic; elsewhere any member who may speak.
    pub(super) fn may_set_topic(&self, id: ClientId, key: &str) -> Outcome {
        // The muted may not speak through the topic either, nor anyone in a moderated
        // room who may not speak there.
        self.may_speak(id, key)?;
        match self.rules.get(key) {
            Some(rules) if rules.topic_locked() && self.rank(id, key) < Rank::Operator => {
                let why = format!(
                    "only {}'s owner and operators set its topic (+t)",
                    rules.name
                );
                Err(Refusal::new(ErrorCode::NotOperator, why).about(&rules.name))
            }
            _ => Ok(()),
        }
    }

    /// Room `key` was just made by `id`: an account that makes a room owns it (not the
    /// default room, which is the server operators'; a guest's room has no owner, as a
    /// guest's name is anyone's once it leaves). A topic kept from before does not
    /// stand in the way: it moderates nothing.
    pub(super) fn claim_room(&mut self, id: ClientId, key: &str, name: &Arc<str>) {
        let moderated = self.rules.get(key).is_some_and(|r| !r.is_unmoderated());
        if moderated || *key == fold_case(&self.config.default_room) {
            return;
        }
        let Some(account) = self.clients[&id].account.clone() else {
            return;
        };
        let rules = self
            .rules
            .entry(key.to_owned())
            .or_insert_with(|| RoomRules {
                name: name.to_string(),
                ..RoomRules::default()
            });
        rules.owner = Some(Named {
            key: account.key.to_string(),
            name: account.name.to_string(),
        });
        self.save_rules(key);
    }

    /// Room `key`'s topic, if it has one.
    pub(super) fn topic_of(&self, key: &str) -> Option<Arc<Topic>> {
        self.rules.get(key).and_then(|rules| rules.topic.clone())
    }

    /// Room `key` has no topic any more (its rules go too if that was all).
    pub(super) fn forget_topic(&mut self, key: &str) {
        let had = self
            .rules
            .get_mut(key)
            .is_some_and(|rules| rules.topic.take().is_some());
        if had {
            self.save_rules(key);
        }
    }

    /// Hand room `key`'s rules to the store (deleted when there is nothing in them).
    pub(super) fn save_rules(&mut self, key: &str) {
        let text = self
            .rules
            .get(key)
            .filter(|rules| !rules.is_empty())
            .and_then(|rules| serde_json::to_string(rules).ok());
        if text.is_none() {
            // Guests' invitations may still matter while they are connected.
            if self
                .rules
                .get(key)
                .is_some_and(|r| r.invited_guests.is_empty())
            {
                self.rules.remove(key);
            }
        }
        self.history.save_rules(key.to_owned(), text);
    }

    /// The room a moderation request is about: one with members, or one with rules.
    pub(super) fn moderated_room(
        &self,
        id: ClientId,
        room: Option<String>,
    ) -> Result<String, Refusal> {
        let key = match room {
            Some(name) => {
                let name = normalize_room(&name)
                    .map_err(|error| Refusal::new(ErrorCode::RoomInvalid, error.to_string()))?;
                fold_case(&name)
            }
            None => return self.resolve_room(id, None),
        };
        if self.rooms.contains_key(&key) || self.rules.contains_key(&key) {
            Ok(key)
        } else {
            let why = format!("there is no room {key}");
            Err(Refusal::new(ErrorCode::NoSuchRoom, why).about(&key))
        }
    }

    pub(super) fn room_name(&self, key: &str) -> Arc<str> {
        match (self.rooms.get(key), self.rules.get(key)) {
            (Some(room), _) => room.name.clone(),
            (None, Some(rules)) => rules.name.as_str().into(),
            (None, None) => key.into(),
        }
    }

    /// The online client holding `nick`.
    fn online(&self, nick: &str) -> Result<ClientId, Refusal> {
        self.nicks
            .get(&nick_key(nick))
            .copied()
            .ok_or_else(|| Refusal::new(ErrorCode::NoSuchNick, format!("nobody is called {nick}")))
    }

    /// A ban's or mute's target: `account:NAME`, an address mask, or a nickname (its
    /// account when signed in, else its address; an offline name: its account).
    fn resolve_target(&self, target: &str, key: &str) -> Result<Resolved, Refusal> {
        let target = target.trim();
        if let Some(name) = target.strip_prefix("account:") {
            let account_key = nick_key(name);
            return self.registered_target(account_key, key).ok_or_else(|| {
                let why = format!("no account is called {name}");
                Refusal::new(ErrorCode::NoSuchNick, why)
            });
        }
        if let Some(mask) = Mask::parse_address(target) {
            return Ok(Resolved {
                mask,
                label: None,
                rank: Rank::Member,
            });
        }
        let target_key = nick_key(target);
        if let Some(&holder) = self.nicks.get(&target_key) {
            let client = &self.clients[&holder];
            let (mask, label) = match &client.account {
                Some(account) => (
                    Mask::Account {
                        key: account.key.to_string(),
                        name: account.name.to_string(),
                    },
                    None,
                ),
                None => {
                    let nick = client.nick.as_deref().unwrap_or(target);
                    (
                        Mask::for_address(client.address),
                        Some(format!("{nick} (guest)")),
                    )
                }
            };
            let rank = self.rank(holder, key);
            return Ok(Resolved { mask, label, rank });
        }
        if let Some(resolved) = self.registered_target(target_key, key) {
            return Ok(resolved);
        }
        let why = format!(
            "nobody is called {target}; a target is a name, account:NAME, or an address \
             mask like 203.0.113.7, 203.0.113.0/24 or 203.0.113.*"
        );
        Err(Refusal::new(ErrorCode::NoSuchNick, why))
    }

    /// The registered account `account_key` as a target in room `key`.
    fn registered_target(&self, account_key: String, key: &str) -> Option<Resolved> {
        let name = self.registered.get(&account_key)?.to_string();
        let rank = self.rank_of_account(Some(&account_key), key);
        Some(Resolved {
            mask: Mask::Account {
                key: account_key,
                name,
            },
            label: None,
            rank,
        })
    }

    /// An account among those present or registered, for op/deop/invite.
    fn resolve_account(&self, nick: &str) -> Result<Named, Refusal> {
        let key = nick_key(nick);
        let account = self
            .nicks
            .get(&key)
            .and_then(|holder| self.clients[holder].account.clone());
        if let Some(account) = account {
            return Ok(Named {
                key: account.key.to_string(),
                name: account.name.to_string(),
            });
        }
        match self.registered.get(&key) {
            Some(name) => Ok(Named {
                key,
                name: name.to_string(),
            }),
            None => {
                let why = format!("{nick} has no account; only accounts can be operators");
                Err(Refusal::new(ErrorCode::NotSignedIn, why))
            }
        }
    }

    pub(super) fn moderate(
        &mut self,
        id: ClientId,
        tag: Option<Tag>,
        room: Option<String>,
        action: Moderation,
    ) -> Outcome {
        let key = self.moderated_room(id, room)?;
        let name = self.room_name(&key);
        let rank = self.rank(id, &key);
        if let Moderation::Rules = action {
            // The key is the operators' to hand out: members only hear there is one.
            let show_key = rank >= Rank::Operator;
            let view = match self.rules.get(&key) {
                Some(rules) => rules.view(show_key),
                None => RoomRules {
                    name: name.to_string(),
                    ..RoomRules::default()
                }
                .view(show_key),
            };
            self.reply(id, tag, Reply::Rules(Arc::new(view)));
            return Ok(());
        }
        if rank < Rank::Operator {
            return Err(not_operator(&name));
        }
        let rules = self.rules.entry(key.clone()).or_insert_with(|| RoomRules {
            name: name.to_string(),
            ..RoomRules::default()
        });
        rules.prune(SystemTime::now());
        let done = match action {
            Moderation::Rules => unreachable!("answered above"),
            Moderation::Kick { nick, reason } => self.kick(id, rank, &key, &nick, reason),
            Moderation::Ban {
                target,
                duration,
                reason,
            } => self.restrict(id, rank, &key, true, &target, duration, reason),
            Moderation::Mute {
                target,
                duration,
                reason,
            } => self.restrict(id, rank, &key, false, &target, duration, reason),
            Moderation::Unban { target } => self.unrestrict(rank, &key, true, &target),
            Moderation::Unmute { target } => self.unrestrict(rank, &key, false, &target),
            Moderation::Op { nick } => self.set_operator(rank, &key, &nick, true),
            Moderation::Deop { nick } => self.set_operator(rank, &key, &nick, false),
            Moderation::Invite { nick } => self.invite(id, &key, &nick),
            Moderation::Mode {
                invite_only,
                registered_only,
                key: room_key,
                moderated,
                topic_locked,
            } => self.set_modes(
                &key,
                invite_only,
                registered_only,
                room_key,
                moderated,
                topic_locked,
            ),
        };
        let done = match done {
            Ok(done) => done,
            Err(refusal) => {
                // Nothing changed; a rules record made just for this goes again.
                if self
                    .rules
                    .get(&key)
                    .is_some_and(|rules| rules.is_empty() && rules.invited_guests.is_empty())
                {
                    self.rules.remove(&key);
                }
                return Err(refusal);
            }
        };
        self.save_rules(&key);
        self.config.metrics.moderation.action(done.kind);
        self.announce(id, &key, &name, done);
        if tag.is_some() {
            self.reply(id, tag, Reply::Done);
        }
        Ok(())
    }

    /// Tell room `key` what a moderator did, as an action message from them, kept in
    /// history. A moderator outside the room (a server operator) is told directly.
    fn announce(&mut self, id: ClientId, key: &str, name: &Arc<str>, done: Done) {
        let actor = self.clients[&id].nick.clone().unwrap_or_default();
        let mut detail = done.detail;
        detail["action"] = json!(done.kind);
        detail["by"] = json!(&*actor);
        let message = ChatMessage {
            id: super::history::UNDECIDED,
            time: SystemTime::now(),
            target: Target::Room(name.clone()),
            from: actor,
            // No sender to spare: the moderator sees it too.
            from_client: 0,
            text: done.text.as_str().into(),
            data: Some(Arc::new(json!({ "moderation": detail }))),
            action: true,
            notice: false,
            account: None,
        };
        if !self.clients[&id].in_room(key) {
            let text = format!("{name}: you {}", done.text).into();
            self.send_to(id, &Event::Notice { text });
        }
        self.record_and_deliver(message, Delivery::Room(key.to_owned()), id, None);
    }

    /// `target` leaves room `key`, told why like everyone there.
    fn put_out(&mut self, target: ClientId, key: &str, why: &str, by: &Arc<str>) {
        let Some(room) = self.rooms.get(key) else {
            return;
        };
        let event = Event::Left {
            room: room.name.clone(),
            nick: self.clients[&target].nick.clone().unwrap_or_default(),
            client: target,
            reason: Some(why.into()),
            removed_by: Some(by.clone()),
        };
        self.broadcast(key, &event);
        self.remove_membership(target, key);
    }

    fn outranks(rank: Rank, target: Rank) -> Outcome {
        if target >= rank && rank != Rank::ServerOperator {
            let why = "you cannot do that to someone of your rank or above";
            return Err(Refusal::new(ErrorCode::NotOperator, why));
        }
        Ok(())
    }

    fn kick(
        &mut self,
        id: ClientId,
        rank: Rank,
        key: &str,
        nick: &str,
        reason: Option<String>,
    ) -> Result<Done, Refusal> {
        let reason = reason_text(reason)?;
        let target = self.online(nick)?;
        if target == id {
            let why = "you cannot kick yourself; leave the room instead";
            return Err(Refusal::new(ErrorCode::BadRequest, why));
        }
        if !self.clients[&target].in_room(key) {
            let why = format!("{nick} is not in {}", self.room_name(key));
            return Err(Refusal::new(ErrorCode::NotInRoom, why));
        }
        Self::outranks(rank, self.rank(target, key))?;
        let actor = self.clients[&id].nick.clone().unwrap_or_default();
        let target_nick = self.clients[&target].nick.clone().unwrap_or_default();
        let why = match &reason {
            Some(reason) => format!("kicked by {actor}: {reason}"),
            None => format!("kicked by {actor}"),
        };
        self.put_out(target, key, &why, &actor);
        let text = match &reason {
            Some(reason) => format!("kicked {target_nick} ({reason})"),
            None => format!("kicked {target_nick}"),
        };
        let detail = json!({"target": &*target_nick, "reason": reason});
        Ok(Done::new("kick", text, detail))
    }

    #[allow(clippy::too_many_arguments)]
    fn restrict(
        &mut self,
        id: ClientId,
        rank: Rank,
        key: &str,
        ban: bool,
        target: &str,
        duration: Option<Duration>,
        reason: Option<String>,
    ) -> Result<Done, Refusal> {
        let (verb, noun) = if ban {
            ("ban", "banned")
        } else {
            ("mute", "muted")
        };
        let reason = reason_text(reason)?;
        if duration.is_some_and(|d| d.is_zero()) {
            let why = format!("a {verb} needs a duration above zero (or none: until lifted)");
            return Err(Refusal::new(ErrorCode::BadRequest, why));
        }
        let resolved = self.resolve_target(target, key)?;
        // Yourself by name or account. An address mask may cover a moderator (a shared
        // office address, this machine): moderators are above bans and mutes, and
        // refusing it would leave guests there beyond reach.
        let own_account = self.account_key(id).map(str::to_owned);
        let is_self = self.nicks.get(&nick_key(target)) == Some(&id)
            || matches!(&resolved.mask, Mask::Account { key, .. } if Some(key) == own_account.as_ref());
        if is_self {
            let why = format!("you cannot {verb} yourself");
            return Err(Refusal::new(ErrorCode::BadRequest, why));
        }
        Self::outranks(rank, resolved.rank)?;
        let expires_ms = match duration {
            None => None,
            Some(duration) => match SystemTime::now().checked_add(duration) {
                Some(expires) if duration <= MAX_RESTRICTION => Some(unix_ms(expires)),
                _ => {
                    let why = format!(
                        "a {verb} lasts at most {} days; leave the duration out for until lifted",
                        MAX_RESTRICTION.as_secs() / 86_400
                    );
                    return Err(Refusal::new(ErrorCode::BadRequest, why));
                }
            },
        };
        let actor = self.clients[&id].nick.clone().unwrap_or_default();
        let restriction = Restriction {
            mask: resolved.mask.clone(),
            label: resolved.label.clone(),
            by: actor.to_string(),
            by_rank: rank,
            reason: reason.clone(),
            expires_ms,
        };
        let shown = restriction.shown();
        let rules = self.rules.get_mut(key).expect("made by moderate");
        RoomRules::restrict(rules.list_mut(ban), restriction);
        if ban {
            // Those it covers who are there now go (those above bans stay).
            let covered: Vec<ClientId> = self
                .rooms
                .get(key)
                .map(|room| room.members.iter().map(|m| m.client).collect::<Vec<_>>())
                .unwrap_or_default()
                .into_iter()
                .filter(|&member| {
                    let client = &self.clients[&member];
                    let account = client.account.as_ref().map(|a| &*a.key);
                    resolved.mask.matches(account, client.address)
                        && self.rank(member, key) < Rank::Operator
                })
                .collect();
            let why = match &reason {
                Some(reason) => format!("banned by {actor}: {reason}"),
                None => format!("banned by {actor}"),
            };
            for member in covered {
                self.put_out(member, key, &why, &actor);
            }
        }
        let mut text = format!("{noun} {shown}");
        if let Some(duration) = duration {
            text.push_str(&format!(
                " for {}",
                describe_duration(duration.as_secs().max(1))
            ));
        }
        if let Some(reason) = &reason {
            text.push_str(&format!(" ({reason})"));
        }
        let detail = json!({"target": shown, "reason": reason, "expires": expires_ms});
        Ok(Done::new(verb, text, detail))
    }

    fn unrestrict(
        &mut self,
        rank: Rank,
        key: &str,
        ban: bool,
        target: &str,
    ) -> Result<Done, Refusal> {
        let (verb, noun, what) = if ban {
            ("unban", "unbanned", "banned")
        } else {
            ("unmute", "unmuted", "muted")
        };
        // A guest's, by the nickname it was shown with (it may be gone), else whoever
        // the target names now.
        let mask = match RoomRules::labelled(self.rules[key].list(ban), target) {
            Some(labelled) => labelled.mask.clone(),
            None => self.resolve_target(target, key)?.mask,
        };
        let rules = self.rules.get_mut(key).expect("made by moderate");
        let Some(found) = rules.list(ban).iter().find(|item| item.mask == mask) else {
            let why = format!(
                "{target} is not {what} in {}; the room's rules list what is",
                rules.name
            );
            return Err(Refusal::new(ErrorCode::BadRequest, why));
        };
        if found.by_rank > rank {
            let why = format!("that {verb} was set by {}, above you; ask them", found.by);
            return Err(Refusal::new(ErrorCode::NotOperator, why));
        }
        let lifted = RoomRules::lift(rules.list_mut(ban), &mask).expect("found above");
        let shown = lifted.shown();
        let text = format!("{noun} {shown}");
        Ok(Done::new(verb, text, json!({ "target": shown })))
    }

    fn set_operator(
        &mut self,
        rank: Rank,
        key: &str,
        nick: &str,
        make: bool,
    ) -> Result<Done, Refusal> {
        if rank < Rank::Owner {
            let why = format!(
                "only {}'s owner (or a server operator) appoints its operators",
                self.room_name(key)
            );
            return Err(Refusal::new(ErrorCode::NotOperator, why));
        }
        let account = self.resolve_account(nick)?;
        let rules = self.rules.get_mut(key).expect("made by moderate");
        let is_owner = rules.owner.as_ref().is_some_and(|o| o.key == account.key);
        let present = rules.operators.iter().any(|op| op.key == account.key);
        let name = account.name.clone();
        match (make, is_owner, present) {
            (_, true, _) => {
                let why = format!("{name} owns {}; an owner is always an operator", rules.name);
                Err(Refusal::new(ErrorCode::BadRequest, why))
            }
            (true, _, true) | (false, _, false) => {
                let is = if make { "already" } else { "not" };
                let why = format!("{name} is {is} an operator of {}", rules.name);
                Err(Refusal::new(ErrorCode::BadRequest, why))
            }
            (true, _, false) => {
                rules.operators.push(account);
                let text = format!("made {name} an operator");
                Ok(Done::new("op", text, json!({ "target": name })))
            }
            (false, _, true) => {
                rules.operators.retain(|op| op.key != account.key);
                let text = format!("took operator status from {name}");
                Ok(Done::new("deop", text, json!({ "target": name })))
            }
        }
    }

    fn invite(&mut self, id: ClientId, key: &str, nick: &str) -> Result<Done, Refusal> {
        let target = self.online(nick)?;
        let name = self.room_name(key);
        if self.clients[&target].in_room(key) {
            let why = format!("{nick} is already in {name}");
            return Err(Refusal::new(ErrorCode::BadRequest, why));
        }
        let account = self.clients[&target].account.clone();
        let target_nick = self.clients[&target].nick.clone().unwrap_or_default();
        let rules = self.rules.get_mut(key).expect("made by moderate");
        match account {
            Some(account) if !rules.invited.iter().any(|n| *n.key == *account.key) => {
                rules.invited.push(Named {
                    key: account.key.to_string(),
                    name: account.name.to_string(),
                });
            }
            Some(_) => {}
            None if !rules.invited_guests.contains(&target) => rules.invited_guests.push(target),
            None => {}
        }
        let by = self.clients[&id].nick.clone().unwrap_or_default();
        self.send_to(target, &Event::Invited { room: name, by });
        let text = format!("invited {target_nick}");
        Ok(Done::new(
            "invite",
            text,
            json!({ "target": &*target_nick }),
        ))
    }

    fn set_modes(
        &mut self,
        key: &str,
        invite_only: Option<bool>,
        registered_only: Option<bool>,
        room_key: Option<Option<String>>,
        moderated: Option<bool>,
        topic_locked: Option<bool>,
    ) -> Result<Done, Refusal> {
        if invite_only.is_none()
            && registered_only.is_none()
            && room_key.is_none()
            && moderated.is_none()
            && topic_locked.is_none()
        {
            let why = "say which: invite-only (+i/-i), accounts-only (+r/-r), a key \
                       (+k KEY/-k), moderated (+m/-m) and/or the topic lock (+t/-t)";
            return Err(Refusal::new(ErrorCode::BadRequest, why));
        }
        if let Some(problem) = room_key
            .as_ref()
            .and_then(|k| k.as_deref().and_then(key_problem))
        {
            return Err(Refusal::new(ErrorCode::BadRequest, problem));
        }
        let rules = self.rules.get_mut(key).expect("made by moderate");
        let mut said = Vec::new();
        if let Some(on) = invite_only {
            rules.invite_only = on;
            said.push(if on {
                "made the room invite-only"
            } else {
                "let anyone join without an invitation"
            });
        }
        if let Some(on) = registered_only {
            rules.registered_only = on;
            said.push(if on {
                "made the room accounts-only"
            } else {
                "let guests join again"
            });
        }
        if let Some(room_key) = room_key {
            // Announced (and kept in history) without the key: members who should
            // have it are told by the operators.
            said.push(match (&room_key, rules.key.is_some()) {
                (Some(_), false) => "set a key on the room",
                (Some(_), true) => "changed the room's key",
                (None, _) => "took the room's key off",
            });
            rules.key = room_key;
        }
        if let Some(on) = moderated {
            rules.moderated = on;
            said.push(if on {
                "made the room moderated (only its operators speak)"
            } else {
                "let everyone speak again"
            });
        }
        if let Some(on) = topic_locked {
            rules.lock_topic(on);
            said.push(if on {
                "locked the topic (only operators set it)"
            } else {
                "let members set the topic"
            });
        }
        let detail = json!({
            "invite_only": rules.invite_only,
            "registered_only": rules.registered_only,
            "has_key": rules.key.is_some(),
            "moderated": rules.moderated,
            "topic_locked": rules.topic_locked(),
        });
        Ok(Done::new("mode", said.join(" and "), detail))
    }

    /// Disconnect `nick`: server operators only.
    pub(super) fn kill(
        &mut self,
        id: ClientId,
        tag: Option<Tag>,
        nick: &str,
        reason: Option<String>,
    ) -> Outcome {
        if !self.is_server_operator(id) {
            let why = "only server operators can disconnect people";
            return Err(Refusal::new(ErrorCode::NotOperator, why));
        }
        let reason = reason_text(reason)?;
        let target = self.online(nick)?;
        if target == id {
            let why = "you cannot disconnect yourself this way; quit instead";
            return Err(Refusal::new(ErrorCode::BadRequest, why));
        }
        let actor = self.clients[&id].nick.clone().unwrap_or_default();
        let shown = match &reason {
            Some(reason) => format!("by {actor}: {reason}"),
            None => format!("by {actor}"),
        };
        let notice = format!("you are disconnected {shown}").into();
        self.send_to(target, &Event::Notice { text: notice });
        self.disconnect(target, CloseReason::Killed, Some(&shown));
        self.config.metrics.moderation.action("kill");
        let text = format!("{nick} is disconnected").into();
        self.send_to(id, &Event::Notice { text });
        if tag.is_some() {
            self.reply(id, tag, Reply::Done);
        }
        Ok(())
    }

    /// The address `id` connects from, for a server operator's `/whois`.
    pub(super) fn address_for(&self, asker: ClientId, target: ClientId) -> Option<IpAddr> {
        self.is_server_operator(asker)
            .then(|| self.clients.get(&target).map(|client| client.address))
            .flatten()
    }
}

/// A moderation change, to announce.
struct Done {
    kind: &'static str,
    text: String,
    detail: serde_json::Value,
}

impl Done {
    fn new(kind: &'static str, text: String, detail: serde_json::Value) -> Done {
        Done { kind, text, detail }
    }
}
