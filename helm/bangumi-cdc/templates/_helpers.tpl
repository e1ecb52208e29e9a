{{/*
Names and labels.
*/}}
{{- define "bangumi-cdc.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "bangumi-cdc.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{/* Name of a family's objects: (dict "root" $ "family" "timeline") */}}
{{- define "bangumi-cdc.familyFullname" -}}
{{- printf "%s-%s" (include "bangumi-cdc.fullname" .root) .family | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "bangumi-cdc.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "bangumi-cdc.selectorLabels" -}}
app.kubernetes.io/name: {{ include "bangumi-cdc.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "bangumi-cdc.labels" -}}
helm.sh/chart: {{ include "bangumi-cdc.chart" . }}
{{ include "bangumi-cdc.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: bangumi-cdc
{{- end }}

{{/* Labels of a family's objects: (dict "root" $ "family" "timeline") */}}
{{- define "bangumi-cdc.familySelectorLabels" -}}
{{ include "bangumi-cdc.selectorLabels" .root }}
app.kubernetes.io/component: worker
bangumi.tv/cdc-family: {{ .family }}
{{- end }}

{{- define "bangumi-cdc.familyLabels" -}}
{{ include "bangumi-cdc.labels" .root }}
app.kubernetes.io/component: worker
bangumi.tv/cdc-family: {{ .family }}
{{- end }}

{{- define "bangumi-cdc.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "bangumi-cdc.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "bangumi-cdc.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{/*
The families of topics/families/*.toml, as generated into files/families.json: a map name → facts
(group, dlq, partitions, topics, service_topics, …). Returned as JSON; use with fromJson.
*/}}
{{- define "bangumi-cdc.familiesData" -}}
{{- $doc := .Files.Get "files/families.json" | fromJson }}
{{- if not $doc.families }}
{{- fail "files/families.json is missing or empty: run scripts/helm-families.py" }}
{{- end }}
{{- toJson $doc.families }}
{{- end }}

{{/*
One family's effective configuration, validated: familyDefaults ⊕ families.<name>, autoscaling
merged over the global `autoscaling`, plus the facts from topics/; `partitions` is the count of the
family's group over all its topics in production (families.<name>.partitions), topics/'s local
count times the topics when unset; `topicPartitions` is topics/'s per-topic (and DLQ) count.
Returned as JSON.
Call: (dict "root" $ "family" "timeline")
*/}}
{{- define "bangumi-cdc.familyConfig" -}}
{{- $root := .root }}
{{- $name := .family }}
{{- $data := index (include "bangumi-cdc.familiesData" $root | fromJson) $name }}
{{- if not $data }}
{{- fail (printf "family %q has no topics/families/%s.toml" $name $name) }}
{{- end }}
{{- $own := default (dict) (index ($root.Values.families | default dict) $name) }}
{{- $cfg := mergeOverwrite (deepCopy $root.Values.familyDefaults) (deepCopy $own) }}
{{- $auto := mergeOverwrite (omit (deepCopy $root.Values.autoscaling) "keda" "hpa") (omit (deepCopy (default (dict) $cfg.autoscaling)) "keda" "hpa") }}
{{- $_ := set $auto "keda" (mergeOverwrite (deepCopy (default (dict) $root.Values.autoscaling.keda)) (deepCopy (default (dict) (dig "autoscaling" "keda" (dict) $cfg)))) }}
{{- $_ := set $auto "hpa" (mergeOverwrite (deepCopy (default (dict) $root.Values.autoscaling.hpa)) (deepCopy (default (dict) (dig "autoscaling" "hpa" (dict) $cfg)))) }}
{{- $where := printf "families.%s" $name }}
{{- /* The partitions of the family's group: the production count when set, else what topics/
provisions locally (its per-topic count times the topics). The group's consumers share all of
them (cooperative-sticky spreads every topic's partitions), so they cap its replicas. */}}
{{- $topicCount := len (concat $data.topics (default (list) $data.service_topics)) }}
{{- $partitions := mul (int $data.partitions) $topicCount | int }}
{{- $partitionsFrom := printf "%d topics × %d in topics/families/%s.toml; set %s.partitions to the production count" $topicCount (int $data.partitions) $name $where }}
{{- if not (kindIs "invalid" $cfg.partitions) }}
{{- $partitions = int $cfg.partitions }}
{{- $partitionsFrom = printf "%s.partitions" $where }}
{{- if lt $partitions 1 }}
{{- fail (printf "%s.partitions must be >= 1 (got %d)" $where $partitions) }}
{{- end }}
{{- end }}
{{- if not (has $auto.mode (list "none" "keda" "hpa")) }}
{{- fail (printf "%s.autoscaling.mode must be none, keda or hpa (got %q)" $where (toString $auto.mode)) }}
{{- end }}
{{- $replicas := int $cfg.replicas }}
{{- if lt $replicas 0 }}
{{- fail (printf "%s.replicas must be >= 0 (got %d)" $where $replicas) }}
{{- end }}
{{- if gt $replicas $partitions }}
{{- fail (printf "%s.replicas=%d exceeds the family's %d partitions (%s): extra consumers would sit idle; add partitions first" $where $replicas $partitions $partitionsFrom) }}
{{- end }}
{{- if ne $auto.mode "none" }}
{{- $max := $partitions }}
{{- if not (kindIs "invalid" $auto.maxReplicas) }}{{ $max = int $auto.maxReplicas }}{{ end }}
{{- $min := 1 }}
{{- if not (kindIs "invalid" $auto.minReplicas) }}{{ $min = int $auto.minReplicas }}{{ end }}
{{- if gt $max $partitions }}
{{- fail (printf "%s.autoscaling.maxReplicas=%d exceeds the family's %d partitions (%s): extra consumers would sit idle; add partitions first" $where $max $partitions $partitionsFrom) }}
{{- end }}
{{- if lt $min 1 }}
{{- fail (printf "%s.autoscaling.minReplicas must be >= 1 (got %d): a group without members never commits, and its lag is unknown" $where $min) }}
{{- end }}
{{- if gt $min $max }}
{{- fail (printf "%s.autoscaling.minReplicas=%d exceeds maxReplicas=%d" $where $min $max) }}
{{- end }}
{{- $_ := set $auto "minReplicas" $min }}
{{- $_ := set $auto "maxReplicas" $max }}
{{- end }}
{{- range $key, $value := (default (dict) $cfg.env) }}
{{- if regexMatch "^(KAFKA_SASL_PASSWORD|MYSQL_PASS|MEILISEARCH_KEY|S3_ACCESS_KEY|S3_SECRET_KEY|REDIS_URI|STATE_REDIS_URI|KAFKA_GROUP_ID|DRAIN_TIMEOUT|HTTP_ADDR|PREFETCH_BUDGET|RUN_MODE|SHADOW_.*)$" $key }}
{{- fail (printf "%s.env.%s is set by the chart: use the dedicated value (secrets: kafka.sasl/mysql/redis/meilisearch/s3.existingSecret; state Redis: redis.state; group: families.%s.groupId; drain: drainTimeoutSeconds; port: metrics.port; prefetch: prefetchBudgetMiB; shadow mode: families.%s.shadow)" $where $key $name $name) }}
{{- end }}
{{- if regexMatch "(?i)(PASSWORD|PASSWD|SECRET|TOKEN|_PASS$|CREDENTIAL)" $key }}
{{- fail (printf "%s.env.%s looks secret: pass it through extraEnv with valueFrom.secretKeyRef" $where $key) }}
{{- end }}
{{- end }}
{{- /* Memory: the prefetch budget (every partition's queue full, as in a first deploy's
catch-up) plus the family's overhead is the floor. The limit defaults to it, a lower one is
refused; the request defaults to the limit (a catch-up reaches it on every replica at once). */}}
{{- $memoryFloor := add (int $cfg.prefetchBudgetMiB) (int $cfg.memoryOverheadMiB) | int }}
{{- $resources := default (dict) $cfg.resources }}
{{- $limits := default (dict) $resources.limits }}
{{- $requests := default (dict) $resources.requests }}
{{- if $limits.memory }}
{{- $limitMiB := include "bangumi-cdc.memoryMiB" (dict "value" $limits.memory "where" (printf "%s.resources.limits.memory" $where)) | int }}
{{- if lt $limitMiB $memoryFloor }}
{{- fail (printf "%s.resources.limits.memory=%v is below %s.prefetchBudgetMiB + memoryOverheadMiB = %dMi: a first deploy catching up from earliest fills every partition's prefetch queue and the worker would be OOM-killed in a loop; lower prefetchBudgetMiB instead (a slower catch-up, nothing lost)" $where $limits.memory $where $memoryFloor) }}
{{- end }}
{{- else }}
{{- $_ := set $limits "memory" (printf "%dMi" $memoryFloor) }}
{{- end }}
{{- if not $requests.memory }}
{{- $_ := set $requests "memory" $limits.memory }}
{{- end }}
{{- $_ := set $resources "limits" $limits }}
{{- $_ := set $resources "requests" $requests }}
{{- $_ := set $cfg "resources" $resources }}
{{- $_ := set $cfg "memoryFloorMiB" $memoryFloor }}
{{- $group := printf "%s%s" (default $data.group $cfg.groupId) $root.Values.kafka.groupIdSuffix }}
{{- $_ := set $cfg "name" $name }}
{{- $_ := set $cfg "replicas" $replicas }}
{{- $_ := set $cfg "autoscaling" $auto }}
{{- $_ := set $cfg "partitions" $partitions }}
{{- $_ := set $cfg "topicPartitions" (int $data.partitions) }}
{{- $_ := set $cfg "group" $group }}
{{- $_ := set $cfg "dlq" $data.dlq }}
{{- $_ := set $cfg "stores" $data.stores }}
{{- $_ := set $cfg "topics" (concat $data.topics (default (list) $data.service_topics)) }}
{{- toJson $cfg }}
{{- end }}

{{/* Names of the families with enabled: true, as a JSON list (sorted). */}}
{{- define "bangumi-cdc.enabledFamilies" -}}
{{- $root := . }}
{{- $enabled := list }}
{{- range $name, $_ := (include "bangumi-cdc.familiesData" $root | fromJson) }}
{{- $cfg := include "bangumi-cdc.familyConfig" (dict "root" $root "family" $name) | fromJson }}
{{- if $cfg.enabled }}{{ $enabled = append $enabled $name }}{{ end }}
{{- end }}
{{- toJson $enabled }}
{{- end }}

{{/*
Release-wide checks; rendered (as nothing) by the settings ConfigMap so they always run.
*/}}
{{- define "bangumi-cdc.validate" -}}
{{- $root := . }}
{{- $data := include "bangumi-cdc.familiesData" $root | fromJson }}
{{- range $name, $_ := ($root.Values.families | default dict) }}
{{- if not (hasKey $data $name) }}
{{- fail (printf "families.%s: no such family in topics/families/ (known: %s)" $name (keys $data | sortAlpha | join ", ")) }}
{{- end }}
{{- end }}
{{- $groups := dict }}
{{- range $name := (include "bangumi-cdc.enabledFamilies" $root | fromJsonArray) }}
{{- $cfg := include "bangumi-cdc.familyConfig" (dict "root" $root "family" $name) | fromJson }}
{{- if hasKey $groups $cfg.group }}
{{- fail (printf "families %s and %s would share the consumer group %q: each family needs its own group" (index $groups $cfg.group) $name $cfg.group) }}
{{- end }}
{{- $_ := set $groups $cfg.group $name }}
{{- end }}
{{- $drain := int $root.Values.drainTimeoutSeconds }}
{{- $grace := int $root.Values.terminationGracePeriodSeconds }}
{{- if lt $drain 1 }}
{{- fail (printf "drainTimeoutSeconds must be >= 1 (got %d)" $drain) }}
{{- end }}
{{- if le $grace $drain }}
{{- fail (printf "terminationGracePeriodSeconds=%d must exceed drainTimeoutSeconds=%d, or Kubernetes kills workers before they commit" $grace $drain) }}
{{- end }}
{{- if regexMatch "^[a-z][a-z0-9+.-]*://[^/@]*:[^/@]*@" (toString $root.Values.redis.uri) }}
{{- if not $root.Values.redis.existingSecret }}
{{- fail "redis.uri holds a password: put the URI in a Secret and set redis.existingSecret/redis.uriKey" }}
{{- end }}
{{- end }}
{{- with $root.Values.redis.state }}
{{- if and (regexMatch "^[a-z][a-z0-9+.-]*://[^/@]*:[^/@]*@" (toString .uri)) (not .existingSecret) }}
{{- fail "redis.state.uri holds a password: put the URI in a Secret and set redis.state.existingSecret/redis.state.uriKey" }}
{{- end }}
{{- end }}
{{- range $property, $_ := ($root.Values.kafka.config | default dict) }}
{{- if has $property (list "group.id" "bootstrap.servers" "enable.auto.offset.store" "enable.auto.commit") }}
{{- fail (printf "kafka.config.%s is owned by the runtime (use kafka.brokers / families.<name>.groupId, or nothing)" $property) }}
{{- end }}
{{- if regexMatch "(?i)(password|secret|token|key\\.pem|sasl\\.jaas)" $property }}
{{- fail (printf "kafka.config.%s looks secret: pass KAFKA_CONFIG__%s through extraEnv with valueFrom.secretKeyRef" $property (upper (replace "." "_" $property))) }}
{{- end }}
{{- end }}
{{- range $key, $_ := ($root.Values.scheduler.env | default dict) }}
{{- if regexMatch "(?i)(PASSWORD|PASSWD|SECRET|TOKEN|_PASS$|CREDENTIAL)" $key }}
{{- fail (printf "scheduler.env.%s looks secret: pass it through extraEnv with valueFrom.secretKeyRef" $key) }}
{{- end }}
{{- end }}
{{- range $key, $_ := ($root.Values.extraConfig | default dict) }}
{{- if regexMatch "(?i)(PASSWORD|PASSWD|SECRET|TOKEN|_PASS$|CREDENTIAL)" $key }}
{{- fail (printf "extraConfig.%s looks secret: pass it through extraEnv with valueFrom.secretKeyRef" $key) }}
{{- end }}
{{- end }}
{{- if and $root.Values.kafka.sasl.mechanism (not $root.Values.kafka.sasl.existingSecret) }}
{{- fail "kafka.sasl.mechanism is set but kafka.sasl.existingSecret is empty: the SASL password must come from a Secret" }}
{{- end }}
{{- end }}

{{/*
Container env of a family's workers and replay Job: secrets by reference, never by value, and
only those of the stores the family uses (topics/families/<name>.toml `stores`). Called with
(dict "root" $ "stores" $f.stores), plus "withoutKafka" true for the scheduler (it has no
broker).
*/}}
{{- define "bangumi-cdc.secretEnv" -}}
{{- $stores := .stores }}
{{- $kafka := not .withoutKafka }}
{{- with .root.Values.kafka.sasl }}
{{- if and $kafka .existingSecret }}
- name: KAFKA_SASL_PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ .existingSecret }}
      key: {{ .passwordKey }}
{{- if .usernameKey }}
- name: KAFKA_SASL_USERNAME
  valueFrom:
    secretKeyRef:
      name: {{ .existingSecret }}
      key: {{ .usernameKey }}
{{- end }}
{{- end }}
{{- end }}
{{- with .root.Values.redis }}
{{- if and (has "redis" $stores) .existingSecret }}
- name: REDIS_URI
  valueFrom:
    secretKeyRef:
      name: {{ .existingSecret }}
      key: {{ .uriKey }}
{{- end }}
{{- end }}
{{- with .root.Values.mysql }}
{{- if and (has "mysql" $stores) .existingSecret }}
- name: MYSQL_PASS
  valueFrom:
    secretKeyRef:
      name: {{ .existingSecret }}
      key: {{ .passwordKey }}
{{- if .userKey }}
- name: MYSQL_USER
  valueFrom:
    secretKeyRef:
      name: {{ .existingSecret }}
      key: {{ .userKey }}
{{- end }}
{{- end }}
{{- end }}
{{- with .root.Values.meilisearch }}
{{- if and (has "meilisearch" $stores) .existingSecret }}
- name: MEILISEARCH_KEY
  valueFrom:
    secretKeyRef:
      name: {{ .existingSecret }}
      key: {{ .keyKey }}
{{- end }}
{{- end }}
{{- with .root.Values.s3 }}
{{- if and (has "s3" $stores) .existingSecret }}
- name: S3_ACCESS_KEY
  valueFrom:
    secretKeyRef:
      name: {{ .existingSecret }}
      key: {{ .accessKeyKey }}
- name: S3_SECRET_KEY
  valueFrom:
    secretKeyRef:
      name: {{ .existingSecret }}
      key: {{ .secretKeyKey }}
{{- end }}
{{- end }}
{{- with .root.Values.extraEnv }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/*
STATE_REDIS_URI of the timeline's Deployment (nothing when redis.state is empty): by reference
when it comes from a Secret.
*/}}
{{- define "bangumi-cdc.stateRedisEnv" -}}
{{- with .Values.redis.state }}
{{- if .existingSecret }}
- name: STATE_REDIS_URI
  valueFrom:
    secretKeyRef:
      name: {{ .existingSecret }}
      key: {{ .uriKey }}
{{- else if .uri }}
- name: STATE_REDIS_URI
  value: {{ .uri | quote }}
{{- end }}
{{- end }}
{{- end }}

{{- define "bangumi-cdc.envFrom" -}}
- configMapRef:
    name: {{ include "bangumi-cdc.fullname" . }}-settings
{{- with .Values.extraEnvFrom }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* Volumes every pod gets: a small writable /tmp, and the Kafka CA if configured. */}}
{{- define "bangumi-cdc.volumes" -}}
- name: tmp
  emptyDir:
    sizeLimit: 16Mi
{{- if .Values.kafka.tls.caSecret }}
- name: kafka-ca
  secret:
    secretName: {{ .Values.kafka.tls.caSecret }}
    items:
      - key: {{ .Values.kafka.tls.caKey }}
        path: ca.crt
{{- end }}
{{- end }}

{{- define "bangumi-cdc.volumeMounts" -}}
- name: tmp
  mountPath: /tmp
{{- if .Values.kafka.tls.caSecret }}
- name: kafka-ca
  mountPath: /etc/bangumi-cdc/kafka-ca
  readOnly: true
{{- end }}
{{- end }}

{{/*
topologySpreadConstraints of a Deployment's pods: `own` (a family's topologySpreadConstraints)
when set, else one constraint per topologySpread.topologyKeys entry over the pods matching
`selector` (the Deployment's selector labels, as YAML) of the same rollout (pod-template-hash).
Call: (dict "root" $ "own" $f.topologySpreadConstraints "selector" (include … ))
*/}}
{{- define "bangumi-cdc.topologySpread" -}}
{{- if .own }}
{{ toYaml .own }}
{{- else }}
{{- $spread := .root.Values.topologySpread }}
{{- range $spread.topologyKeys }}
- topologyKey: {{ . }}
  maxSkew: 1
  whenUnsatisfiable: {{ $spread.whenUnsatisfiable }}
  labelSelector:
    matchLabels:
      {{- $.selector | nindent 6 }}
  matchLabelKeys:
    - pod-template-hash
{{- end }}
{{- end }}
{{- end }}

{{/*
A memory quantity (`160Mi`, `1Gi`, `200M`, `134217728`) in whole MiB, rounded down. Called with
a dict: value, where (the value's name, for the error).
*/}}
{{- define "bangumi-cdc.memoryMiB" -}}
{{- $text := toString .value }}
{{- if not (regexMatch "^[0-9]+(\\.[0-9]+)?(Ki|Mi|Gi|Ti|k|M|G|T)?$" $text) }}
{{- fail (printf "%s=%q is not a memory quantity (e.g. 256Mi, 1Gi)" .where $text) }}
{{- end }}
{{- $number := regexFind "^[0-9.]+" $text | float64 }}
{{- $unit := trimPrefix (regexFind "^[0-9.]+" $text) $text }}
{{- $bytes := dict "" 1.0 "Ki" 1024.0 "Mi" 1048576.0 "Gi" 1073741824.0 "Ti" 1099511627776.0 "k" 1000.0 "M" 1000000.0 "G" 1000000000.0 "T" 1000000000000.0 }}
{{- div (mulf $number (get $bytes $unit)) 1048576 | int }}
{{- end }}
