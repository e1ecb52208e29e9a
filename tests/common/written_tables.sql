-- Tables of Bangumi's `bangumi` database that workers write but no family subscribes to, so
-- they are not in fixtures/generator/schema.sql (the Debezium generator captures every table
-- there). Column names, types, defaults and keys as bangumi/dev-env sql/schema/*.sql at 31572bcc.
-- Every test database gets them (tests/common/mysql.rs).
--
-- ENGINE: dev-env's dump has MyISAM for both; here they are InnoDB, which the notify family
-- needs for exactly-once effects (a MyISAM write is not undone by a rollback; see README,
-- "notify").

CREATE TABLE chii_notify (
  nt_id                 MEDIUMINT(8) UNSIGNED NOT NULL AUTO_INCREMENT,
  nt_uid                MEDIUMINT(8) UNSIGNED NOT NULL,
  nt_from_uid           MEDIUMINT(8) UNSIGNED NOT NULL,
  nt_status             TINYINT(1) UNSIGNED NOT NULL DEFAULT 1,
  nt_type               TINYINT(3) UNSIGNED NOT NULL DEFAULT 0,
  nt_mid                MEDIUMINT(8) UNSIGNED NOT NULL COMMENT 'ID in notify_field',
  nt_related_id         INT(10) UNSIGNED NOT NULL,
  nt_dateline           INT(10) UNSIGNED NOT NULL,
  PRIMARY KEY (nt_id),
  KEY nt_uid (nt_uid, nt_status, nt_type, nt_related_id),
  KEY nt_mid (nt_mid),
  KEY nt_from_uid (nt_from_uid)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb3;

CREATE TABLE chii_notify_field (
  ntf_id                MEDIUMINT(8) UNSIGNED NOT NULL AUTO_INCREMENT,
  ntf_hash              TINYINT(3) UNSIGNED NOT NULL DEFAULT 0,
  ntf_rid               INT(10) UNSIGNED NOT NULL,
  ntf_title             VARCHAR(255) CHARACTER SET utf8mb4 NOT NULL,
  PRIMARY KEY (ntf_id),
  KEY ntf_rid (ntf_rid),
  KEY ntf_hash (ntf_hash)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb3
