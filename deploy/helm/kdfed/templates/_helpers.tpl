{{/* The component this release runs, checked. */}}
{{- define "kdfed.component" -}}
{{- if not (has .Values.component (list "hub" "spoke" "standalone" "console")) -}}
{{- fail (printf "component: must be hub, spoke, standalone or console, not %q" (toString .Values.component)) -}}
{{- end -}}
{{- .Values.component -}}
{{- end -}}

{{/* The binary this release runs: kdfed-hub, kdfed-console or kdfed-spoke (standalone runs the spoke). */}}
{{- define "kdfed.binary" -}}
{{- $c := include "kdfed.component" . -}}
{{- if eq $c "hub" }}kdfed-hub{{ else if eq $c "console" }}kdfed-console{{ else }}kdfed-spoke{{ end -}}
{{- end -}}

{{/* Whether this release serves an admission webhook. */}}
{{- define "kdfed.webhookEnabled" -}}
{{- $c := include "kdfed.component" . -}}
{{- if or (eq $c "hub") (eq $c "standalone") (and (eq $c "spoke") .Values.spoke.webhook.enabled) }}true{{ end -}}
{{- end -}}

{{/* The webhook serving certificate's Secret. */}}
{{- define "kdfed.webhookSecret" -}}
{{- default (printf "%s-webhook-tls" (include "kdfed.binary" .)) .Values.webhook.secretName -}}
{{- end -}}

{{/* The certificate mode, checked. */}}
{{- define "kdfed.certificate" -}}
{{- if not (has .Values.webhook.certificate (list "generate" "cert-manager" "secret")) -}}
{{- fail (printf "webhook.certificate: must be generate, cert-manager or secret, not %q" (toString .Values.webhook.certificate)) -}}
{{- end -}}
{{- .Values.webhook.certificate -}}
{{- end -}}

{{/* Labels of every object: the chart's, then extraLabels. */}}
{{- define "kdfed.labels" -}}
app.kubernetes.io/part-of: kdfed
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/instance: {{ .Release.Name }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | quote }}
{{- with .Values.extraLabels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/* The selector labels of the component's pods (as deploy/ sets them). */}}
{{- define "kdfed.selector" -}}
app.kubernetes.io/name: {{ include "kdfed.binary" . }}
{{- end -}}

{{/* The image. */}}
{{- define "kdfed.image" -}}
{{ .Values.image.repository }}:{{ .Values.image.tag }}
{{- end -}}

{{/* The admin port of the component. */}}
{{- define "kdfed.adminPort" -}}
{{- $c := include "kdfed.component" . -}}
{{- if .Values.admin.port }}{{ .Values.admin.port }}{{ else if eq $c "hub" }}9090{{ else if eq $c "console" }}9093{{ else }}9091{{ end -}}
{{- end -}}

{{/*
The admission webhook configurations of a component (hub or spoke), as the binaries
register them themselves (common/src/admission.rs), reached through the component's
Service. Arguments: (dict "root" $ "name" "kdfed-hub" "caBundle" "...").
*/}}
{{- define "kdfed.webhookConfigurations" -}}
{{- $root := .root -}}
{{- $name := .name -}}
{{- $ns := $root.Release.Namespace -}}
{{- $cert := include "kdfed.certificate" $root -}}
{{- $client := dict "service" (dict "name" $name "namespace" $ns "port" 443) -}}
{{- /* The spoke's webhooks skip its fence watchdog (webhook.unreviewed_user). */ -}}
{{- $unreviewed := ternary "" (printf "system:serviceaccount:%s:kdfed-fence-watchdog" $ns) (eq $name "kdfed-hub") -}}
{{- if .caBundle }}{{ $_ := set $client "caBundle" .caBundle }}{{ end -}}
{{- $validating := list
  (list "apps" "kubedirector.hpe.com" "kubedirectorapps" (list "CREATE" "UPDATE" "DELETE"))
  (list "clusters" "kubedirector.hpe.com" "kubedirectorclusters" (list "CREATE" "UPDATE"))
  (list "configs" "kubedirector.hpe.com" "kubedirectorconfigs" (list "CREATE" "UPDATE"))
  (list "members" "federation.kubedirector.hpe.com" "kubedirectormembers" (list "CREATE" "UPDATE")) -}}
{{- $mutating := list
  (list "clusters" "kubedirector.hpe.com" "kubedirectorclusters" (list "CREATE" "UPDATE"))
  (list "configs" "kubedirector.hpe.com" "kubedirectorconfigs" (list "CREATE" "UPDATE")) -}}
apiVersion: admissionregistration.k8s.io/v1
kind: ValidatingWebhookConfiguration
metadata:
  name: {{ $name }}.kubedirector.hpe.com
  labels:
    {{- include "kdfed.labels" $root | nindent 4 }}
  {{- if eq $cert "cert-manager" }}
  annotations:
    cert-manager.io/inject-ca-from: {{ $ns }}/{{ $name }}-webhook
  {{- end }}
webhooks:
{{- range $validating }}
- name: {{ index . 0 }}.{{ $name }}.kubedirector.hpe.com
  clientConfig:
    {{- toYaml (merge (dict "service" (dict "path" "/validate")) (deepCopy $client)) | nindent 4 }}
  rules:
  - apiGroups: [{{ index . 1 }}]
    apiVersions: ["*"]
    operations: {{ toJson (index . 3) }}
    resources: [{{ index . 2 }}]
    scope: "*"
  failurePolicy: Fail
  sideEffects: None
  admissionReviewVersions: [v1]
  timeoutSeconds: 10
  {{- if $unreviewed }}
  matchConditions:
  - name: not-the-unreviewed-user
    expression: {{ printf "request.userInfo.username != '%s'" $unreviewed | quote }}
  {{- end }}
{{- end }}
---
apiVersion: admissionregistration.k8s.io/v1
kind: MutatingWebhookConfiguration
metadata:
  name: {{ $name }}.kubedirector.hpe.com
  labels:
    {{- include "kdfed.labels" $root | nindent 4 }}
  {{- if eq $cert "cert-manager" }}
  annotations:
    cert-manager.io/inject-ca-from: {{ $ns }}/{{ $name }}-webhook
  {{- end }}
webhooks:
{{- range $mutating }}
- name: {{ index . 0 }}.mutate.{{ $name }}.kubedirector.hpe.com
  clientConfig:
    {{- toYaml (merge (dict "service" (dict "path" "/mutate")) (deepCopy $client)) | nindent 4 }}
  rules:
  - apiGroups: [{{ index . 1 }}]
    apiVersions: ["*"]
    operations: {{ toJson (index . 3) }}
    resources: [{{ index . 2 }}]
    scope: "*"
  failurePolicy: Fail
  sideEffects: None
  reinvocationPolicy: Never
  admissionReviewVersions: [v1]
  timeoutSeconds: 10
  {{- if $unreviewed }}
  matchConditions:
  - name: not-the-unreviewed-user
    expression: {{ printf "request.userInfo.username != '%s'" $unreviewed | quote }}
  {{- end }}
{{- end }}
{{- end -}}
