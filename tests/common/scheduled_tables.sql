-- Tables of Bangumi's `bangumi` database that only the scheduler's jobs touch (trending reads
-- the interests and posts, the token cleanups delete), so they are neither in
-- fixtures/generator/schema.sql nor in written_tables.sql. Column names, types, defaults, keys
-- and engines as bangumi/dev-env sql/schema/*.sql at 31572bcc (the interests' many secondary
-- indexes left out). Created by TestDatabase::with_scheduled_tables (tests/common/mysql.rs).

CREATE TABLE chii_subject_interests (
  interest_id               INT(10) UNSIGNED NOT NULL AUTO_INCREMENT,
  interest_uid              MEDIUMINT(8) UNSIGNED NOT NULL,
  interest_subject_id       MEDIUMINT(8) UNSIGNED NOT NULL,
  interest_subject_type     SMALLINT(6) UNSIGNED NOT NULL DEFAULT 0,
  interest_rate             TINYINT(3) UNSIGNED NOT NULL DEFAULT 0,
  interest_type             TINYINT(1) UNSIGNED NOT NULL DEFAULT 0,
  interest_has_comment      TINYINT(1) UNSIGNED NOT NULL,
  interest_comment          MEDIUMTEXT NOT NULL,
  interest_tag              MEDIUMTEXT NOT NULL,
  interest_ep_status        MEDIUMINT(8) UNSIGNED NOT NULL DEFAULT 0,
  interest_vol_status       MEDIUMINT(8) UNSIGNED NOT NULL,
  interest_wish_dateline    INT(10) UNSIGNED NOT NULL,
  interest_doing_dateline   INT(10) UNSIGNED NOT NULL,
  interest_collect_dateline INT(10) UNSIGNED NOT NULL,
  interest_on_hold_dateline INT(10) UNSIGNED NOT NULL,
  interest_dropped_dateline INT(10) UNSIGNED NOT NULL,
  interest_create_ip        CHAR(15) NOT NULL,
  interest_lasttouch_ip     CHAR(15) NOT NULL,
  interest_lasttouch        INT(10) UNSIGNED NOT NULL DEFAULT 0,
  interest_private          TINYINT(1) UNSIGNED NOT NULL,
  PRIMARY KEY (interest_id),
  UNIQUE KEY user_interest (interest_uid, interest_subject_id),
  KEY interest_subject_id (interest_subject_id, interest_type),
  KEY top_subject (interest_subject_id, interest_subject_type, interest_doing_dateline)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb3;

CREATE TABLE chii_subject_posts (
  sbj_pst_id       MEDIUMINT(8) UNSIGNED NOT NULL AUTO_INCREMENT,
  sbj_pst_mid      MEDIUMINT(8) UNSIGNED NOT NULL,
  sbj_pst_uid      MEDIUMINT(8) UNSIGNED NOT NULL,
  sbj_pst_related  MEDIUMINT(8) UNSIGNED NOT NULL DEFAULT 0,
  sbj_pst_content  MEDIUMTEXT CHARACTER SET utf8mb4 NOT NULL,
  sbj_pst_state    TINYINT(1) UNSIGNED NOT NULL,
  sbj_pst_dateline INT(10) UNSIGNED NOT NULL DEFAULT 0,
  PRIMARY KEY (sbj_pst_id),
  KEY pss_topic_id (sbj_pst_mid)
) ENGINE=MyISAM DEFAULT CHARSET=utf8mb3;

CREATE TABLE chii_oauth_access_tokens (
  id           MEDIUMINT(8) NOT NULL AUTO_INCREMENT,
  type         TINYINT(1) UNSIGNED NOT NULL DEFAULT 0,
  access_token VARCHAR(40) COLLATE utf8mb3_unicode_ci NOT NULL,
  client_id    VARCHAR(80) COLLATE utf8mb3_unicode_ci NOT NULL,
  user_id      VARCHAR(80) COLLATE utf8mb3_unicode_ci DEFAULT NULL,
  expires      TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP ON UPDATE CURRENT_TIMESTAMP,
  scope        VARCHAR(4000) COLLATE utf8mb3_unicode_ci DEFAULT NULL,
  info         VARCHAR(255) CHARACTER SET utf8mb4 NOT NULL,
  PRIMARY KEY (id),
  UNIQUE KEY access_token (access_token),
  KEY user_expires (user_id, expires)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb3 COLLATE=utf8mb3_unicode_ci;

CREATE TABLE chii_oauth_refresh_tokens (
  refresh_token VARCHAR(40) COLLATE utf8mb3_unicode_ci NOT NULL,
  client_id     VARCHAR(80) COLLATE utf8mb3_unicode_ci NOT NULL,
  user_id       VARCHAR(80) COLLATE utf8mb3_unicode_ci DEFAULT NULL,
  expires       TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP ON UPDATE CURRENT_TIMESTAMP,
  scope         VARCHAR(4000) COLLATE utf8mb3_unicode_ci DEFAULT NULL,
  PRIMARY KEY (refresh_token)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb3 COLLATE=utf8mb3_unicode_ci;
