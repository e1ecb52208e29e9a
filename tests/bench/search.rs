//! The `search` section: the real `search` binary catching up on `chii_subjects` updates, beside
//! the same documents written straight to Meilisearch in batches of the same size (the ceiling),
//! and `search reindex` of every generated subject.
//!
//! The subjects are the subject-date section's generated ones ([`bench_subject`]: realistic
//! infoboxes with aliases), given what a search document is made of: names, meta tags,
//! PHP-serialized tags, votes, rank, a date, collection counts, some nsfw.

use std::collections::BTreeSet;

use fleet_harness::meili::{Meili, meili_key, meili_url, unique_index_prefix};
use search::{Index, Rows, built};

use super::*;

#[derive(Debug, Clone, Serialize)]
pub(crate) struct SearchRun {
    subjects: u64,
    /// Mean bytes of a subject's document as JSON.
    document_bytes: f64,
    setup_seconds: f64,
    events: u64,
    /// The family's `batch.max_messages`.
    batch_max_messages: u64,
    /// Documents per event: the distinct subjects of consecutive windows of
    /// `batch_max_messages` events, over the events (what a batch sends, deduplicated by id).
    documents_per_event: f64,
    fill: Fill,
    /// The worker's catch-up, in events.
    worker: Drain,
    /// The same events' documents, built beforehand and written straight to Meilisearch, one
    /// replace task per window of `batch_max_messages` events, all enqueued at once.
    ceiling: Drain,
    /// `search reindex --index subjects` of every subject.
    reindex: Reindex,
    /// What the indexes held at the end of each run, against what they should.
    end_state: Vec<String>,
    same_end_state: bool,
}

#[derive(Debug, Clone, Serialize)]
struct Reindex {
    documents: u64,
    seconds: f64,
    per_s: f64,
    page_size: usize,
    /// VmHWM, the last sample before the process exited.
    peak_rss_kb: u64,
    cpu_us_per_document: Option<f64>,
}

/// PHP-serialized `field_tags` (as Bangumi's PHP writes them) of `tags` (name, count).
fn php_tags(tags: &[(&str, u32)]) -> String {
    let mut s = format!("a:{}:{{", tags.len());
    for (i, (name, count)) in tags.iter().enumerate() {
        let count = count.to_string();
        let _ = write!(
            s,
            "i:{i};a:2:{{s:8:\"tag_name\";s:{}:\"{name}\";s:6:\"result\";s:{}:\"{count}\";}}",
            name.len(),
            count.len()
        );
    }
    s.push('}');
    s
}

/// Gives the generated subjects of `db` what a search document is made of, varied by id.
async fn make_searchable(db: &TestDatabase) -> anyhow::Result<()> {
    sqlx::query(
        "UPDATE chii_subjects SET subject_name = CONCAT('Bench subject ', subject_id), \
         subject_name_cn = IF(subject_id % 4 = 0, '', CONCAT('基准条目', subject_id)), \
         field_meta_tags = ELT(1 + subject_id % 4, '日本 TV 原创', '漫画改 TV 日本', '小说改 剧场版', ''), \
         subject_nsfw = (subject_id % 40 = 0), subject_wish = subject_id % 997, \
         subject_collect = subject_id % 4999, subject_doing = subject_id % 101, \
         subject_on_hold = subject_id % 31, subject_dropped = subject_id % 17",
    )
    .execute(&db.pool)
    .await?;
    let tags = [
        php_tags(&[("TV", 812), ("原创", 420), ("2015年10月", 97), ("搞笑", 31)]),
        php_tags(&[("漫画改", 1500), ("热血", 600), ("少年漫", 220)]),
        php_tags(&[("小说", 77), ("轻小说", 40)]),
        String::new(),
    ];
    sqlx::query(
        "UPDATE chii_subject_fields SET field_tags = ELT(1 + field_sid % 4, ?, ?, ?, ?), \
         field_rate_1 = field_sid % 3, field_rate_3 = field_sid % 5, field_rate_5 = field_sid % 11, \
         field_rate_6 = field_sid % 17, field_rate_7 = field_sid % 29, field_rate_8 = field_sid % 23, \
         field_rate_9 = field_sid % 7, field_rate_10 = field_sid % 5, field_rank = field_sid % 9000, \
         field_date = DATE_ADD('1980-01-01', INTERVAL field_sid % 16000 DAY)",
    )
    .bind(&tags[0])
    .bind(&tags[1])
    .bind(&tags[2])
    .bind(&tags[3])
    .execute(&db.pool)
    .await?;
    Ok(())
}

/// The documents of `ids`, by the worker's rules, from `db`.
async fn documents(db: &TestDatabase, ids: &BTreeSet<u32>) -> anyhow::Result<Vec<Value>> {
    let built = built(&db.pool, Index::Subjects, Rows::Ids(ids))
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok(built
        .into_values()
        .filter_map(|b| match b {
            Ok(search::document::Built::Document(doc)) => Some(Value::Object(doc)),
            _ => None,
        })
        .collect())
}

/// The `search` binary's environment for `db` and the indexes under `index_prefix`.
fn search_env(db: &TestDatabase, index_prefix: &str) -> Vec<(&'static str, String)> {
    vec![
        ("MYSQL_DB", db.name.clone()),
        ("MEILISEARCH_URL", meili_url()),
        ("MEILISEARCH_KEY", meili_key()),
        ("MEILISEARCH_INDEX_PREFIX", index_prefix.to_owned()),
        ("MEILISEARCH_TIMEOUT", "30s".to_owned()),
    ]
}

/// Runs `search <args>` to its end; fails unless it exits 0.
async fn search_command(
    args: &[&str],
    name: &str,
    env: &[(String, String)],
) -> anyhow::Result<Worker> {
    let mut run = Worker::spawn_with_args("search", args, name, env)?;
    let status = fleet_harness::process::wait_exit(&mut run.child, Duration::from_secs(600))
        .await?
        .with_context(|| format!("search {} did not finish", args.join(" ")))?;
    if !status.success() {
        bail!(
            "search {} exited with {status}; see {}",
            args.join(" "),
            log_dir().display()
        );
    }
    Ok(run)
}

/// A line for the report comparing the documents `index` holds with `want`; whether they match.
async fn check_count(
    meili: &Meili,
    label: &str,
    index: &str,
    want: u64,
) -> anyhow::Result<(String, bool)> {
    let got = meili.document_count(index).await?;
    let line = if got == want {
        format!("{label}: {got} documents, as expected")
    } else {
        format!("{label}: {got} documents, expected {want}")
    };
    say(format!("  {line}"));
    Ok((line, got == want))
}

pub(crate) async fn search_bench(o: &Options) -> anyhow::Result<SearchRun> {
    let meili = Meili::local()?;
    meili.require().await?;
    let setup = Instant::now();
    let n = o.search_subjects;
    let events = o.search_events;
    let (subjects, db) = bench_subjects_database("search", n).await?;
    make_searchable(&db).await?;
    let setup_seconds = setup.elapsed().as_secs_f64();

    let family = cdc_topics::by_name(search::FAMILY)?.context("no search family")?;
    let batch = family.batch.max_messages.max(1);
    let order: Vec<u32> = (0..events).map(|i| subject_of_event(i, n)).collect();
    let windows: Vec<BTreeSet<u32>> = order
        .chunks(batch)
        .map(|w| w.iter().copied().collect())
        .collect();
    let touched: BTreeSet<u32> = order.iter().copied().collect();
    let documents_per_event =
        windows.iter().map(BTreeSet::len).sum::<usize>() as f64 / events.max(1) as f64;

    // The ceiling's documents, built now: the same rows the worker reads.
    let mut batches = Vec::with_capacity(windows.len());
    for w in &windows {
        batches.push(documents(&db, w).await?);
    }
    let document_bytes = batches
        .iter()
        .flatten()
        .map(|d| d.to_string().len())
        .sum::<usize>() as f64
        / batches.iter().map(Vec::len).sum::<usize>().max(1) as f64;
    say(format!(
        "  {document_bytes:.0} B per document; set up in {setup_seconds:.1} s"
    ));

    say(format!(
        "search: {events} updates of {n} subjects ({documents_per_event:.2} documents per event in windows of {batch})"
    ));
    let ord = Arc::new(order);
    let (topic_prefix, fill) = subject_updates_topic(search::FAMILY, subjects, ord.clone()).await?;

    let mut end_state = Vec::new();
    let mut same = true;
    let group = unique("bench-search");

    // The worker, into indexes set up as an operator would (`search settings --apply`).
    let worker_prefix = unique_index_prefix("bench-search");
    let extra = search_env(&db, &worker_prefix);
    let env = worker_env(&topic_prefix, &group, &format!("{group}:"), &extra);
    search_command(
        &["settings", "--apply", "--index", "subjects"],
        "search-settings",
        &env,
    )
    .await?;
    let drain = catch_up("search", &group, &env, events).await?;
    let timeout = Duration::from_secs(300 + events / 50);
    let live = Index::Subjects.name_with(&worker_prefix);
    let (line, ok) = check_count(&meili, "worker", &live, touched.len() as u64).await?;
    end_state.push(line);
    same &= ok;

    // The ceiling: the same batches straight to Meilisearch, into an index set up the same way.
    let ceiling_prefix = unique_index_prefix("bench-search-ceiling");
    let env_ceiling = worker_env(&topic_prefix, &group, "", &search_env(&db, &ceiling_prefix));
    search_command(
        &["settings", "--apply", "--index", "subjects"],
        "search-settings-ceiling",
        &env_ceiling,
    )
    .await?;
    say("search: the same documents straight to Meilisearch, one task per batch");
    let index = Index::Subjects.name_with(&ceiling_prefix);
    let started = Instant::now();
    let mut tasks = Vec::with_capacity(batches.len());
    for (docs, w) in batches.iter().zip(ord.chunks(batch)) {
        tasks.push((
            meili.replace_documents(&index, "id", docs).await?,
            w.len() as u64,
        ));
    }
    let mut samples = vec![(0.0, 0)];
    let mut done = 0;
    let mut next = 0;
    while next < tasks.len() {
        let (task, window) = tasks[next];
        let state = meili.task(task).await?;
        match state["status"].as_str() {
            Some("succeeded") => {
                done += window;
                next += 1;
                samples.push((started.elapsed().as_secs_f64(), done));
            }
            Some("failed" | "canceled") => bail!("ceiling task {task}: {state}"),
            _ if started.elapsed() > timeout => bail!("ceiling: task {task} not done: {state}"),
            _ => tokio::time::sleep(Duration::from_millis(10)).await,
        }
    }
    let ceiling = drain_from_samples(
        "Meilisearch, the batches written directly",
        &samples,
        events,
    );
    say(format!(
        "  ceiling: {:.0} events/s (5–95%), {:.0} overall",
        ceiling.per_s_mid, ceiling.per_s
    ));
    let (line, ok) = check_count(&meili, "ceiling", &index, touched.len() as u64).await?;
    end_state.push(line);
    same &= ok;

    // The reindex of every subject, into a third prefix.
    let reindex_prefix = unique_index_prefix("bench-search-reindex");
    let env_reindex = worker_env(&topic_prefix, &group, "", &search_env(&db, &reindex_prefix));
    search_command(
        &["settings", "--apply", "--index", "subjects"],
        "search-settings-reindex",
        &env_reindex,
    )
    .await?;
    let page_size = 1_000;
    say(format!(
        "search: `search reindex --index subjects` of {n} subjects"
    ));
    let started = Instant::now();
    let page = page_size.to_string();
    let mut run = Worker::spawn_with_args(
        "search",
        &["reindex", "--index", "subjects", "--page-size", &page],
        "search-reindex",
        &env_reindex,
    )?;
    let mut peak_rss_kb = 0;
    let mut cpu_seconds = None;
    let status = loop {
        if let Some(status) = run.child.try_wait()? {
            break status;
        }
        peak_rss_kb = peak_rss_kb.max(run.hwm_kb().unwrap_or(0));
        cpu_seconds = run.cpu_seconds().or(cpu_seconds);
        if started.elapsed() > timeout {
            bail!("search reindex not done after {timeout:?}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let seconds = started.elapsed().as_secs_f64();
    if !status.success() {
        bail!(
            "search reindex exited with {status}; see {}",
            log_dir().display()
        );
    }
    let reindex = Reindex {
        documents: n,
        seconds,
        per_s: n as f64 / seconds,
        page_size,
        peak_rss_kb,
        cpu_us_per_document: cpu_seconds.map(|c| c * 1e6 / n.max(1) as f64),
    };
    say(format!(
        "  reindex: {n} documents in {seconds:.1} s ({:.0}/s), RSS peak {peak_rss_kb} KiB",
        reindex.per_s
    ));
    let live = Index::Subjects.name_with(&reindex_prefix);
    let (line, ok) = check_count(&meili, "reindex", &live, n).await?;
    end_state.push(line);
    same &= ok;

    for prefix in [&worker_prefix, &ceiling_prefix, &reindex_prefix] {
        if let Err(e) = meili.delete_indexes_with_prefix(prefix).await {
            say(format!("  deleting the indexes {prefix}*: {e}"));
        }
    }
    let name = db.name.clone();
    if let Err(e) = db.drop_now().await {
        say(format!("  dropping database {name}: {e}"));
    }
    Ok(SearchRun {
        subjects: n,
        document_bytes,
        setup_seconds,
        events,
        batch_max_messages: batch as u64,
        documents_per_event,
        fill,
        worker: drain,
        ceiling,
        reindex,
        end_state,
        same_end_state: same,
    })
}

/// The summary table's rows.
pub(crate) fn summary_rows(m: &mut String, s: &SearchRun) {
    let _ = writeln!(
        m,
        "| search catch-up, 1 partition | {} events/s ({} documents/s) | the same batches written directly to Meilisearch {} events/s | {} | – |",
        fmt_rate(s.worker.per_s_mid),
        fmt_rate(s.worker.per_s_mid * s.documents_per_event),
        fmt_rate(s.ceiling.per_s_mid),
        ratio(s.worker.per_s_mid, s.ceiling.per_s_mid)
    );
    let _ = writeln!(
        m,
        "| search reindex, {} subjects | {} documents/s | the ceiling above {} documents/s | {} | – |",
        s.reindex.documents,
        fmt_rate(s.reindex.per_s),
        fmt_rate(s.ceiling.per_s_mid * s.documents_per_event),
        ratio(s.reindex.per_s, s.ceiling.per_s_mid * s.documents_per_event)
    );
}

/// The section.
pub(crate) fn section(m: &mut String, s: &SearchRun) {
    let _ = writeln!(
        m,
        "\n## 3c. search catch-up and reindex (the release binary)\n"
    );
    let _ = writeln!(
        m,
        "A fresh MariaDB database with {} generated subjects (the subject-date section's infoboxes, with aliases; names, \
         meta tags, PHP-serialized tags, votes, rank, date, collection counts and some nsfw set by id; {:.0} B per document \
         as JSON; set up in {:.1} s). A 1-partition topic holds {} `chii_subjects` updates made from the real fixture \
         record ({:.0} B per record), spread uniformly over the subjects: {:.2} documents per event once each window \
         of {} events (the family's `batch.max_messages`) is deduplicated by id. Every index is created first by \
         `search settings --apply`. The worker drains the topic: per batch one `SELECT … IN` and one replace task, \
         waited for before the batch's offsets are stored (one batch of a partition at a time). The ceiling writes the same windows' \
         documents, built beforehand from the same rows, straight to Meilisearch: one `POST …/documents` per window, \
         all enqueued at once, timed until each task succeeded. The reindex is `search reindex --index subjects \
         --page-size {}` of every subject into a third index, swap included.\n",
        s.subjects,
        s.document_bytes,
        s.setup_seconds,
        s.events,
        s.fill.bytes as f64 / s.events.max(1) as f64,
        s.documents_per_event,
        s.batch_max_messages,
        s.reindex.page_size,
    );
    let _ = writeln!(
        m,
        "| run | events/s (5–95%) | events/s (first→last) | documents/s (5–95%) | worker ÷ this | RSS load / idle / peak | CPU µs/event |"
    );
    let _ = writeln!(m, "|---|---|---|---|---|---|---|");
    for d in [&s.worker, &s.ceiling] {
        let _ = writeln!(
            m,
            "| {} | {} | {} | {} | {} | {} | {} |",
            d.label,
            fmt_rate(d.per_s_mid),
            fmt_rate(d.per_s),
            fmt_rate(d.per_s_mid * s.documents_per_event),
            ratio(s.worker.per_s_mid, d.per_s_mid),
            d.rss.as_ref().map_or("–".into(), |r| format!(
                "{} / {} / {}",
                mib(r.loaded_kb),
                mib(r.idle_kb),
                mib(r.peak_kb)
            )),
            d.cpu_us_per_event.map_or("–".into(), |c| format!("{c:.1}"))
        );
    }
    let r = &s.reindex;
    let _ = writeln!(
        m,
        "\nReindex: {} documents in {:.1} s, **{} documents/s**, peak RSS {}, {} µs CPU per document.\n",
        r.documents,
        r.seconds,
        fmt_rate(r.per_s),
        mib(r.peak_rss_kb),
        r.cpu_us_per_document
            .map_or("?".into(), |c| format!("{c:.1}"))
    );
    let _ = writeln!(
        m,
        "End state{}: {}.",
        if s.same_end_state {
            ""
        } else {
            " (**MISMATCH**)"
        },
        s.end_state.join("; ")
    );
}
