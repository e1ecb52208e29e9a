-- The timeline writer's record of applied messages, by Kafka coordinates (topic, partition,
-- offset). `IF NOT EXISTS`: workers before `timeline migrate` created this same table at run
-- time; this migration adopts it as it is.
CREATE TABLE IF NOT EXISTS cdc_applied_messages (
  topic VARCHAR(249) NOT NULL,
  kafka_partition INT NOT NULL,
  kafka_offset BIGINT NOT NULL,
  consumer_group VARCHAR(255) NOT NULL DEFAULT '' COMMENT 'who applied it, informational',
  applied_at TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP,
  PRIMARY KEY (topic, kafka_partition, kafka_offset),
  KEY applied_at (applied_at)
) ENGINE=InnoDB DEFAULT CHARSET=ascii;
