//! `dlq cutover` and `dlq rollback`: hand a family's place in its topics over between a legacy
//! consumer group (server-private's, go-canal's) and the family's own group, offset for offset,
//! so that the receiving side resumes exactly where the other stopped: nothing missed, nothing
//! applied twice.
//!
//! Not a rewind by time (that is `rewind`, in [`crate::repair`]), and not shadow mode: both
//! groups must be idle, and the records themselves are never read.
//!
//! # Layout
//! - [`Direction`], [`HandOver`]: which way, between which groups, with which policies.
//! - [`Move`]: one partition's plan: both groups' offsets, the partition's ends, the new offset.
//! - [`hand_over`]: reads both groups, prints the plan, checks it, writes it with `--yes`.
//! - [`print_plan`]: the plan as the operator reads it.
//! - [`live_members`]: a group's active members (also what `rewind` refuses on).

use std::time::Duration;

use cdc_runtime::WorkerConfig;
use cdc_topics::Family;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::{Offset, TopicPartitionList};
use serde_json::{Value as Json, json};

use crate::audit::Audit;
use crate::cli::{HandOverArgs, Missing};
use crate::error::DlqError;

/// How long one broker request may take.
const TIMEOUT: Duration = Duration::from_secs(10);

/// Which way the offsets go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// From the legacy group into the family's.
    Cutover,
    /// From the family's group back into the legacy one.
    Rollback,
}

impl Direction {
    /// The command's name, as in the audit trail.
    pub fn name(self) -> &'static str {
        match self {
            Direction::Cutover => "cutover",
            Direction::Rollback => "rollback",
        }
    }
}

/// One hand-over, as asked for on the command line.
#[derive(Debug)]
pub struct HandOver<'a> {
    /// Which way.
    pub direction: Direction,
    /// The legacy group (`--from-group` of a cutover, `--to-group` of a rollback).
    pub legacy_group: &'a str,
    /// Policies and confirmation.
    pub args: &'a HandOverArgs,
}

/// One partition of the plan.
#[derive(Debug, Clone)]
pub struct Move {
    /// Topic (with the deployment's prefix).
    pub topic: String,
    /// Partition.
    pub partition: i32,
    /// The giving group's committed offset, if any.
    pub giving: Option<i64>,
    /// The receiving group's committed offset now, if any.
    pub receiving: Option<i64>,
    /// The partition's first offset (low watermark).
    pub start: i64,
    /// The partition's end (high watermark).
    pub end: i64,
    /// What the receiving group gets: the giving group's offset, else what `--missing` says
    /// (none for `fail`).
    pub new: Option<i64>,
}

impl Move {
    fn name(&self) -> String {
        format!("{}[{}]", self.topic, self.partition)
    }

    /// Whether the receiving group is past the new offset: writing it re-applies records.
    fn backwards(&self) -> bool {
        matches!((self.receiving, self.new), (Some(now), Some(new)) if now > new)
    }

    fn audit(&self) -> Json {
        json!({
            "topic": self.topic,
            "partition": self.partition,
            "giving": self.giving,
            "receiving_before": self.receiving,
            "new": self.new,
        })
    }
}

/// Runs a hand-over for `family` (topic prefix and group as deployed): prints the plan, then
/// refuses if either group has active members, if a partition has no offset to give (with
/// `--missing fail`) or if the receiving group would move backwards (without `--force`). With
/// `--dry-run` it prints those problems and stops; with `--yes` it writes the audit intent,
/// commits the new offsets into the receiving group, and writes the outcome.
pub fn hand_over(
    config: &WorkerConfig,
    family: &Family,
    request: &HandOver<'_>,
) -> Result<(), DlqError> {
    let args = request.args;
    let family_group = config.group_id(family);
    let family_group = family_group.as_ref();
    let (giving_group, receiving_group) = match request.direction {
        Direction::Cutover => (request.legacy_group, family_group),
        Direction::Rollback => (family_group, request.legacy_group),
    };
    if giving_group == receiving_group {
        return Err(DlqError::Usage(format!(
            "the legacy group and the family's group are both {giving_group}; nothing to hand over"
        )));
    }
    let giving = group_client(config, giving_group)?;
    let receiving = group_client(config, receiving_group)?;
    let plan = plan(config, family, &giving, &receiving, args.missing)?;

    print_plan(family, request, [giving_group, receiving_group], &plan);

    let groups = [(giving_group, &giving), (receiving_group, &receiving)];
    let problems = problems(config, groups, &plan, request)?;
    if args.dry_run {
        for problem in &problems {
            println!("would refuse: {problem}");
        }
        println!("dry run: nothing changed");
        return Ok(());
    }
    if !problems.is_empty() {
        return Err(DlqError::Refused(format!(
            "{} refused, nothing changed: {}",
            request.direction.name(),
            problems.join("; ")
        )));
    }
    if !args.yes {
        return Err(DlqError::Refused(format!(
            "{} of family {} not done; add --yes --reason '…' to do it",
            request.direction.name(),
            family.family
        )));
    }

    let mut target = TopicPartitionList::new();
    for m in &plan {
        if let Some(new) = m.new {
            target.add_partition_offset(&m.topic, m.partition, Offset::Offset(new))?;
        }
    }
    let mut audit = Audit::open(&args.audit.audit_log, args.audit.reason()?)?;
    let details = json!({
        "giving_group": giving_group,
        "receiving_group": receiving_group,
        "missing": args.missing.name(),
        "force": args.force,
        "partitions": plan.iter().map(Move::audit).collect::<Vec<_>>(),
    });
    let operation = request.direction.name();
    audit.intent(operation, family, details.clone())?;
    let result = receiving.commit(&target, CommitMode::Sync);
    audit.outcome(
        operation,
        family,
        json!({"request": details, "result": result.as_ref().map_or_else(|e| e.to_string(), |()| "done".into())}),
    )?;
    result?;
    println!(
        "group {receiving_group} now at the offsets of {giving_group} ({} partitions)",
        target.count()
    );
    Ok(())
}

/// Prints the plan: per partition, both groups' offsets, the new one, the end and the lag left.
fn print_plan(family: &Family, request: &HandOver<'_>, groups: [&str; 2], plan: &[Move]) {
    let [giving_group, receiving_group] = groups;
    let args = request.args;
    println!(
        "{} of family {}: offsets of group {giving_group} → group {receiving_group}",
        request.direction.name(),
        family.family
    );
    println!("(lag: records the receiving group has left to process from its new offset)");
    for m in plan {
        let offset = |o: Option<i64>| o.map_or("none".into(), |o| o.to_string());
        let new = match (m.new, m.giving) {
            (Some(new), Some(_)) => new.to_string(),
            (Some(new), None) => format!("{new} (--missing {})", args.missing.name()),
            (None, _) => "? (never committed)".into(),
        };
        let lag = m
            .new
            .map_or("?".into(), |new| (m.end - new).max(0).to_string());
        println!(
            "  {}: {giving_group} {}, {receiving_group} {} → {new}; end {}, lag {lag}",
            m.name(),
            offset(m.giving),
            offset(m.receiving),
            m.end,
        );
    }
}

/// A client in `group` that never joins it: it reads and commits the group's offsets.
fn group_client(config: &WorkerConfig, group: &str) -> Result<BaseConsumer, DlqError> {
    Ok(cdc_runtime::kafka::base_config(config, "dlq-handover")
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .create()?)
}

fn unreachable(config: &WorkerConfig) -> impl Fn(KafkaError) -> DlqError + '_ {
    |e| DlqError::BrokerUnreachable {
        brokers: config.kafka_brokers.clone(),
        reason: e.to_string(),
    }
}

/// Every partition of the family's topics, with both groups' offsets and the new one.
fn plan(
    config: &WorkerConfig,
    family: &Family,
    giving: &BaseConsumer,
    receiving: &BaseConsumer,
    missing: Missing,
) -> Result<Vec<Move>, DlqError> {
    let metadata = giving
        .fetch_metadata(None, TIMEOUT)
        .map_err(unreachable(config))?;
    let mut partitions = TopicPartitionList::new();
    let mut absent = Vec::new();
    for topic in family.all_topics() {
        match metadata.topics().iter().find(|t| t.name() == topic) {
            Some(t) => {
                for p in t.partitions() {
                    partitions.add_partition(topic, p.id());
                }
            }
            None => absent.push(topic.to_owned()),
        }
    }
    if !absent.is_empty() {
        return Err(DlqError::Refused(format!(
            "topic(s) of family {} missing on the broker: {} (wrong KAFKA_TOPIC_PREFIX, or not provisioned); nothing changed",
            family.family,
            absent.join(", ")
        )));
    }
    let given = giving.committed_offsets(partitions.clone(), TIMEOUT)?;
    let held = receiving.committed_offsets(partitions.clone(), TIMEOUT)?;
    let offset_in = |list: &TopicPartitionList, topic: &str, partition: i32| match list
        .find_partition(topic, partition)
        .map(|e| e.offset())
    {
        Some(Offset::Offset(o)) => Some(o),
        _ => None,
    };
    partitions
        .elements()
        .iter()
        .map(|e| {
            let (topic, partition) = (e.topic(), e.partition());
            let (start, end) = giving.fetch_watermarks(topic, partition, TIMEOUT)?;
            let giving = offset_in(&given, topic, partition);
            let new = giving.or(match missing {
                Missing::Earliest => Some(start),
                Missing::Latest => Some(end),
                Missing::Fail => None,
            });
            Ok(Move {
                topic: topic.to_owned(),
                partition,
                giving,
                receiving: offset_in(&held, topic, partition),
                start,
                end,
                new,
            })
        })
        .collect()
}

/// Why the plan must not be written now, each problem naming its group or partitions.
fn problems(
    config: &WorkerConfig,
    groups: [(&str, &BaseConsumer); 2],
    plan: &[Move],
    request: &HandOver<'_>,
) -> Result<Vec<String>, DlqError> {
    let mut problems = Vec::new();
    for (group, client) in groups {
        let members = live_members(client, group).map_err(unreachable(config))?;
        if !members.is_empty() {
            problems.push(format!(
                "group {group} has {} active member(s): {}; stop its workers first",
                members.len(),
                members.join(", ")
            ));
        }
    }
    let names = |pick: fn(&Move) -> bool| -> Vec<String> {
        plan.iter().filter(|m| pick(m)).map(Move::name).collect()
    };
    let never = names(|m| m.new.is_none());
    if !never.is_empty() {
        problems.push(format!(
            "the giving group never committed {} partition(s): {}; say what they get with --missing earliest or --missing latest",
            never.len(),
            never.join(", ")
        ));
    }
    let backwards = names(Move::backwards);
    if !backwards.is_empty() && !request.args.force {
        problems.push(format!(
            "the receiving group is ahead on {} partition(s): {}; handing over would re-apply records it has applied (add --force if that is meant)",
            backwards.len(),
            backwards.join(", ")
        ));
    }
    Ok(problems)
}

/// The active members of `group` ([`describe_member`]), through `client` (any client of the
/// broker).
pub fn live_members(client: &BaseConsumer, group: &str) -> Result<Vec<String>, KafkaError> {
    let groups = client.fetch_group_list(Some(group), TIMEOUT)?;
    Ok(groups
        .groups()
        .iter()
        .filter(|g| g.name() == group)
        .flat_map(|g| g.members().iter().map(describe_member))
        .collect())
}

/// A member as `client-id (host)`, its member id when the broker reports no client id (tansu).
fn describe_member(member: &rdkafka::groups::GroupMemberInfo) -> String {
    let name = Some(member.client_id())
        .filter(|id| !id.is_empty())
        .unwrap_or(member.id());
    match member.client_host() {
        "" => name.to_owned(),
        host => format!("{name} ({host})"),
    }
}
