//! Rows the scheduler's jobs read or delete, for its tests and the demo: subjects and
//! collections (trending subjects), subject topic posts (trending topics), OAuth tokens (the
//! cleanups), in a [`TestDatabase`] with [`TestDatabase::with_scheduled_tables`].

use crate::mysql::TestDatabase;

impl TestDatabase {
    /// A subject of `subject_type`, banned when `ban` is 1 (the only value trending skips).
    pub async fn add_ranked_subject(
        &self,
        id: u32,
        subject_type: u8,
        ban: u8,
    ) -> anyhow::Result<()> {
        sqlx::query(
            "INSERT INTO chii_subjects (subject_id, subject_type_id, subject_name, subject_name_cn, subject_uid, \
             subject_creator, subject_image, subject_platform, field_infobox, field_meta_tags, field_summary, \
             field_5, subject_idx_cn, subject_airtime, subject_nsfw, subject_ban) \
             VALUES (?, ?, '', '', '', 0, '', 0, '', '', '', '', '', 0, 0, ?)",
        )
        .bind(id)
        .bind(subject_type)
        .bind(ban)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// `count` collections of `subject` by new users (uids after `*next_uid`), with these
    /// datelines (unix seconds).
    pub async fn add_interests(
        &self,
        next_uid: &mut u32,
        subject: u32,
        count: u32,
        doing_dateline: i64,
        lasttouch: i64,
    ) -> anyhow::Result<()> {
        for _ in 0..count {
            *next_uid += 1;
            sqlx::query(
                "INSERT INTO chii_subject_interests (interest_uid, interest_subject_id, interest_subject_type, \
                 interest_has_comment, interest_comment, interest_tag, interest_vol_status, interest_wish_dateline, \
                 interest_doing_dateline, interest_collect_dateline, interest_on_hold_dateline, \
                 interest_dropped_dateline, interest_create_ip, interest_lasttouch_ip, interest_lasttouch, \
                 interest_private) VALUES (?, ?, 0, 0, '', '', 0, 0, ?, 0, 0, 0, '', '', ?, 0)",
            )
            .bind(*next_uid)
            .bind(subject)
            .bind(doing_dateline)
            .bind(lasttouch)
            .execute(&self.pool)
            .await?;
        }
        Ok(())
    }

    /// `count` posts in subject topic `topic`, at `dateline` (unix seconds).
    pub async fn add_posts(&self, topic: u32, count: u32, dateline: i64) -> anyhow::Result<()> {
        for _ in 0..count {
            sqlx::query(
                "INSERT INTO chii_subject_posts (sbj_pst_mid, sbj_pst_uid, sbj_pst_content, sbj_pst_state, \
                 sbj_pst_dateline) VALUES (?, 1, '', 0, ?)",
            )
            .bind(topic)
            .bind(dateline)
            .execute(&self.pool)
            .await?;
        }
        Ok(())
    }

    /// Access tokens `{tag}{i}` for `i` in `0..count`, expired `days_ago` days ago (negative:
    /// in the future), by the server's clock.
    pub async fn add_access_tokens(
        &self,
        tag: &str,
        count: usize,
        days_ago: i64,
    ) -> anyhow::Result<()> {
        let ids: Vec<usize> = (0..count).collect();
        for chunk in ids.chunks(500) {
            let values =
                vec!["(?, 'client', '1', NOW() - INTERVAL ? DAY, '')"; chunk.len()].join(",");
            let sql = format!(
                "INSERT INTO chii_oauth_access_tokens (access_token, client_id, user_id, expires, info) VALUES {values}"
            );
            let mut q = sqlx::query(&sql);
            for i in chunk {
                q = q.bind(format!("{tag}{i}")).bind(days_ago);
            }
            q.execute(&self.pool).await?;
        }
        Ok(())
    }

    /// A refresh token expired `days_ago` days ago (negative: in the future).
    pub async fn add_refresh_token(&self, token: &str, days_ago: i64) -> anyhow::Result<()> {
        sqlx::query(
            "INSERT INTO chii_oauth_refresh_tokens (refresh_token, client_id, user_id, expires) \
             VALUES (?, 'client', '1', NOW() - INTERVAL ? DAY)",
        )
        .bind(token)
        .bind(days_ago)
        .execute(&self.pool)
        .await?;
        Ok(())
    }
}
