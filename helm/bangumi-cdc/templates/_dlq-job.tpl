{{- /*
A one-off Job running the `dlq` tool for one family: the replay Job and the cutover/rollback Job.
Called with a dict: root (the chart's context), job (the Job's values: family, backoffLimit,
ttlSecondsAfterFinished, activeDeadlineSeconds, resources), family (familyConfig of job.family),
component (label and name part), args (the tool's arguments), annotations (more, optional),
stores (the stores whose secrets it gets; optional, default the family's).
The Job's name carries a hash of its arguments, so changing one creates a new Job instead of
failing on the immutable spec of the previous one.
*/}}
{{- define "bangumi-cdc.dlqJob" -}}
{{- $root := .root }}
{{- $r := .job }}
{{- $f := .family }}
{{- $component := .component }}
{{- $args := .args }}
{{- $stores := ternary .stores $f.stores (hasKey . "stores") }}
apiVersion: batch/v1
kind: Job
metadata:
  name: {{ printf "%s-%s-%s" (include "bangumi-cdc.familyFullname" (dict "root" $root "family" $r.family)) $component (toJson $args | sha256sum | trunc 8) | trunc 63 | trimSuffix "-" }}
  labels:
    {{- include "bangumi-cdc.labels" $root | nindent 4 }}
    app.kubernetes.io/component: {{ $component }}
    bangumi.tv/cdc-family: {{ $r.family }}
  annotations:
    # Created with kubectl, outside the release: GitOps controllers that find it carrying the
    # release's labels leave it alone (Argo CD: not pruned, not out of sync; Flux: not pruned).
    argocd.argoproj.io/sync-options: Prune=false
    argocd.argoproj.io/compare-options: IgnoreExtraneous
    kustomize.toolkit.fluxcd.io/prune: disabled
    bangumi.tv/cdc-dlq: {{ $f.dlq | quote }}
    bangumi.tv/cdc-consumer-group: {{ $f.group | quote }}
    {{- with .annotations }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
spec:
  backoffLimit: {{ int $r.backoffLimit }}
  {{- with $r.ttlSecondsAfterFinished }}
  ttlSecondsAfterFinished: {{ int . }}
  {{- end }}
  {{- with $r.activeDeadlineSeconds }}
  activeDeadlineSeconds: {{ int . }}
  {{- end }}
  template:
    metadata:
      labels:
        {{- include "bangumi-cdc.selectorLabels" $root | nindent 8 }}
        app.kubernetes.io/component: {{ $component }}
        bangumi.tv/cdc-family: {{ $r.family }}
    spec:
      restartPolicy: Never
      serviceAccountName: {{ include "bangumi-cdc.serviceAccountName" $root }}
      automountServiceAccountToken: false
      enableServiceLinks: false
      terminationGracePeriodSeconds: {{ int $root.Values.terminationGracePeriodSeconds }}
      securityContext:
        {{- toYaml $root.Values.podSecurityContext | nindent 8 }}
      {{- with $root.Values.imagePullSecrets }}
      imagePullSecrets:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      containers:
        - name: dlq
          image: {{ include "bangumi-cdc.image" $root | quote }}
          imagePullPolicy: {{ $root.Values.image.pullPolicy }}
          command:
            - dlq
          args:
            {{- range $args }}
            - {{ . | quote }}
            {{- end }}
          envFrom:
            {{- include "bangumi-cdc.envFrom" $root | nindent 12 }}
          {{- $env := include "bangumi-cdc.secretEnv" (dict "root" $root "stores" $stores) | trim }}
          env:
            # The audit trail on a writable volume (the root filesystem is read-only); every
            # audit line is also in the Job's log.
            - name: DLQ_AUDIT_LOG
              value: {{ printf "%s/dlq-audit.jsonl" (trimSuffix "/" $root.Values.dlqAudit.mountPath) | quote }}
            # The family's group as its Deployment runs it (families.<name>.groupId, the suffix).
            - name: KAFKA_GROUP_ID
              value: {{ $f.group | quote }}
            {{- with $env }}
            {{- . | nindent 12 }}
            {{- end }}
            {{- range $key, $value := $f.env }}
            - name: {{ $key }}
              value: {{ toString $value | quote }}
            {{- end }}
          resources:
            {{- toYaml $r.resources | nindent 12 }}
          securityContext:
            {{- toYaml $root.Values.securityContext | nindent 12 }}
          volumeMounts:
            {{- include "bangumi-cdc.volumeMounts" $root | nindent 12 }}
            - name: dlq-audit
              mountPath: {{ $root.Values.dlqAudit.mountPath | quote }}
      volumes:
        {{- include "bangumi-cdc.volumes" $root | nindent 8 }}
        - name: dlq-audit
          {{- toYaml $root.Values.dlqAudit.volume | nindent 10 }}
{{- end }}
