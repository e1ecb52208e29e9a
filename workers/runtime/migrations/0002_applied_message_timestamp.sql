-- A message's identity includes its Kafka record timestamp (ms since the epoch): a topic that is
-- deleted and created again reuses offsets from 0, and its new messages must not be taken for
-- the old ones. Rows recorded before this migration, and messages the broker gave no timestamp,
-- have -1: they match their coordinates whatever the timestamp, as before.
ALTER TABLE cdc_applied_messages
  ADD COLUMN kafka_timestamp BIGINT NOT NULL DEFAULT -1
    COMMENT 'record timestamp, ms since the epoch; -1: unknown (matches any)' AFTER kafka_offset,
  DROP PRIMARY KEY,
  ADD PRIMARY KEY (topic, kafka_partition, kafka_offset, kafka_timestamp);
