{{- define "ferry.name" -}}
{{- .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "ferry.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "ferry.selectorLabels" -}}
app.kubernetes.io/name: {{ include "ferry.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "ferry.labels" -}}
{{ include "ferry.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{- end -}}

{{- define "ferry.adminSecret" -}}
{{- if .Values.adminToken.existingSecret -}}
{{- .Values.adminToken.existingSecret -}}
{{- else if .Values.adminToken.value -}}
{{- printf "%s-admin" (include "ferry.fullname" .) -}}
{{- end -}}
{{- end -}}

{{/* The headless Service listing every pod's peer port: the DHT's bootstrap name. */}}
{{- define "ferry.peersService" -}}
{{- printf "%s-peers" (include "ferry.fullname" . | trunc 57 | trimSuffix "-") -}}
{{- end -}}

{{/* HOST:PORT every node bootstraps from (resolved again every peers.rediscover_secs). */}}
{{- define "ferry.p2pBootstrap" -}}
{{- printf "%s.%s.svc.%s:%d" (include "ferry.peersService" .) .Release.Namespace .Values.p2p.clusterDomain (int .Values.p2p.port) -}}
{{- end -}}

{{- define "ferry.clusterKeySecret" -}}
{{- if .Values.p2p.clusterKey.existingSecret -}}
{{- .Values.p2p.clusterKey.existingSecret -}}
{{- else if .Values.p2p.clusterKey.value -}}
{{- printf "%s-cluster-key" (include "ferry.fullname" .) -}}
{{- end -}}
{{- end -}}

{{/* Where the cluster key file is mounted in the ferry container. */}}
{{- define "ferry.clusterKeyDir" -}}/etc/ferry-cluster-key{{- end -}}

{{/*
The registries containerdMirror writes hosts.toml for, as JSON: [{"name": "docker.io", "server":
"https://registry-1.docker.io"}, ...]. Each must be an [[upstream]] of config, by its name or its
URL's host[:port] (Docker Hub's hosts answer to docker.io, as in ferry's routing); the upstream's
URL is containerd's fallback, as `ferry containerd-config --config` writes it.
*/}}
{{- define "ferry.containerdRegistries" -}}
{{- $config := fromToml .Values.config -}}
{{- if hasKey $config "Error" -}}
{{- fail (printf "config is not valid TOML: %s" $config.Error) -}}
{{- end -}}
{{- $upstreams := dict -}}
{{- range $u := ($config.upstream | default list) -}}
{{- $url := trimSuffix "/" ($u.url | default "" | toString) -}}
{{- $name := lower ($u.name | default (urlParse $url).host | toString) -}}
{{- if has $name (list "index.docker.io" "registry-1.docker.io" "registry.hub.docker.com") -}}
{{- $name = "docker.io" -}}
{{- end -}}
{{- $_ := set $upstreams $name $url -}}
{{- end -}}
{{- $out := list -}}
{{- range $r := .Values.containerdMirror.registries -}}
{{- $r = toString $r -}}
{{- if not (regexMatch "^[a-z0-9]([a-z0-9.-]*[a-z0-9])?(:[0-9]+)?$" $r) -}}
{{- fail (printf "containerdMirror.registries: %q must be a registry host[:port] such as docker.io (lower case, no scheme or path)" $r) -}}
{{- end -}}
{{- if not (hasKey $upstreams $r) -}}
{{- fail (printf "containerdMirror.registries: %s is not an [[upstream]] of config (ferry would answer containerd's ?ns=%s with NAME_UNKNOWN); the upstreams are: %s" $r $r (keys $upstreams | sortAlpha | join ", " | default "none")) -}}
{{- end -}}
{{- $out = append $out (dict "name" $r "server" (get $upstreams $r)) -}}
{{- end -}}
{{- toJson $out -}}
{{- end -}}

{{/*
The containerd-hosts init container's script (POSIX sh): for each registry, hosts.toml is written
to a temporary file beside the real one and renamed over it only when it differs, so containerd
never reads half a file and a rerun changes nothing.
*/}}
{{- define "ferry.containerdHostsScript" -}}
set -eu
umask 022
# put REGISTRY < TEXT: $HOSTS_DIR/REGISTRY/hosts.toml becomes TEXT.
put() {
  dir="$HOSTS_DIR/$1"
  tmp="$dir/.hosts.toml.ferry-tmp"
  mkdir -p "$dir"
  cat >"$tmp"
  if cmp -s "$tmp" "$dir/hosts.toml"; then
    rm -f "$tmp"
    echo "$dir/hosts.toml: unchanged"
  else
    mv -f "$tmp" "$dir/hosts.toml"
    echo "$dir/hosts.toml: written"
  fi
}
{{- range $r := include "ferry.containerdRegistries" . | fromJsonArray }}
put '{{ $r.name }}' <<'HOSTS_TOML'
# Written by the ferry Helm chart ({{ $.Release.Namespace }}/{{ $.Release.Name }}): pulls go through the ferry mirror on this node.
server = "{{ $r.server }}"

[host."http://127.0.0.1:{{ $.Values.hostPort }}"]
  capabilities = ["pull", "resolve"]
  skip_verify = true
HOSTS_TOML
{{- end }}
{{- end -}}

{{/* The pod template shared by the DaemonSet and the Deployment. */}}
{{- define "ferry.podTemplate" -}}
metadata:
  labels:
    {{- include "ferry.selectorLabels" . | nindent 4 }}
    {{- with .Values.podLabels }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
  annotations:
    checksum/config: {{ .Values.config | sha256sum }}
    {{- if and .Values.p2p.enabled .Values.p2p.clusterKey.value (not .Values.p2p.clusterKey.existingSecret) }}
    checksum/cluster-key: {{ .Values.p2p.clusterKey.value | sha256sum }}
    {{- end }}
    {{- with .Values.podAnnotations }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
spec:
  {{- with .Values.imagePullSecrets }}
  imagePullSecrets:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with .Values.priorityClassName }}
  priorityClassName: {{ . }}
  {{- end }}
  terminationGracePeriodSeconds: {{ .Values.terminationGracePeriodSeconds }}
  securityContext:
    {{- toYaml .Values.podSecurityContext | nindent 4 }}
  {{- $dataPermissions := and (eq .Values.storage.type "hostPath") .Values.storage.hostPathPermissions.enabled }}
  {{- if or $dataPermissions .Values.containerdMirror.enabled }}
  initContainers:
    {{- if $dataPermissions }}
    - name: data-permissions
      image: {{ .Values.storage.hostPathPermissions.image }}
      command:
        - chown
        - "{{ .Values.podSecurityContext.runAsUser }}:{{ .Values.podSecurityContext.runAsGroup }}"
        - /var/lib/ferry
      securityContext:
        runAsNonRoot: false
        runAsUser: 0
        allowPrivilegeEscalation: false
        capabilities:
          drop: [ALL]
          add: [CHOWN]
      volumeMounts:
        - name: data
          mountPath: /var/lib/ferry
    {{- end }}
    {{- if .Values.containerdMirror.enabled }}
    # hosts.toml for each of containerdMirror.registries, on the node (the script writes atomically
    # and changes nothing when the files are current).
    - name: containerd-hosts
      image: {{ .Values.containerdMirror.image }}
      command:
        - sh
        - -c
        - |
          {{- include "ferry.containerdHostsScript" . | nindent 10 }}
      env:
        - name: HOSTS_DIR
          value: /host/containerd-hosts
      securityContext:
        # The hosts directory is root's.
        runAsNonRoot: false
        runAsUser: 0
        allowPrivilegeEscalation: false
        readOnlyRootFilesystem: true
        capabilities:
          drop: [ALL]
      resources:
        requests:
          cpu: 10m
          memory: 16Mi
        limits:
          memory: 32Mi
      volumeMounts:
        - name: containerd-hosts
          mountPath: /host/containerd-hosts
    {{- end }}
  {{- end }}
  containers:
    - name: ferry
      image: "{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}"
      imagePullPolicy: {{ .Values.image.pullPolicy }}
      args:
        - serve
        - --config
        - /etc/ferry/ferry.toml
        - --data-dir
        - /var/lib/ferry
        - --listen
        - "0.0.0.0:{{ .Values.port }}"
        {{- if .Values.metrics.enabled }}
        - --metrics
        - "0.0.0.0:{{ .Values.metrics.port }}"
        {{- end }}
        {{- if .Values.p2p.enabled }}
        - --p2p
        - --p2p-listen
        - "0.0.0.0:{{ .Values.p2p.port }}"
        - --p2p-bootstrap
        - {{ include "ferry.p2pBootstrap" . | quote }}
        {{- if include "ferry.clusterKeySecret" . }}
        - --cluster-key-file
        - {{ printf "%s/cluster.key" (include "ferry.clusterKeyDir" .) }}
        {{- end }}
        {{- end }}
        {{- if .Values.tls.existingSecret }}
        - --tls-cert
        - /etc/ferry-tls/tls.crt
        - --tls-key
        - /etc/ferry-tls/tls.key
        {{- end }}
        {{- if .Values.auth.htpasswdSecret }}
        - --htpasswd
        - /etc/ferry-auth/htpasswd
        {{- end }}
        {{- if .Values.auth.tokens }}
        - --token-auth
        {{- if .Values.auth.signingKeySecret }}
        - --token-signing-key
        - /etc/ferry-token-key/token-signing.key
        {{- end }}
        {{- end }}
      env:
        - name: FERRY_LOG_FORMAT
          value: json
        {{- if include "ferry.adminSecret" . }}
        - name: FERRY_ADMIN_TOKEN
          valueFrom:
            secretKeyRef:
              name: {{ include "ferry.adminSecret" . }}
              key: {{ .Values.adminToken.key }}
        {{- end }}
        {{- with .Values.env }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
      ports:
        - name: registry
          containerPort: {{ .Values.port }}
          protocol: TCP
          {{- if and (eq .Values.kind "DaemonSet") (gt (int .Values.hostPort) 0) }}
          hostPort: {{ .Values.hostPort }}
          {{- end }}
        {{- if .Values.metrics.enabled }}
        - name: metrics
          containerPort: {{ .Values.metrics.port }}
          protocol: TCP
        {{- end }}
        {{- if .Values.p2p.enabled }}
        - name: peer
          containerPort: {{ .Values.p2p.port }}
          protocol: TCP
          {{- if and (eq .Values.kind "DaemonSet") (gt (int .Values.hostPort) 0) }}
          hostPort: {{ .Values.p2p.port }}
          {{- end }}
        {{- end }}
      startupProbe:
        httpGet:
          path: /healthz
          port: registry
          {{- if .Values.tls.existingSecret }}
          scheme: HTTPS
          {{- end }}
        periodSeconds: 2
        failureThreshold: 60
      livenessProbe:
        httpGet:
          path: /healthz
          port: registry
          {{- if .Values.tls.existingSecret }}
          scheme: HTTPS
          {{- end }}
        periodSeconds: 10
        failureThreshold: 3
      readinessProbe:
        httpGet:
          path: /readyz
          port: registry
          {{- if .Values.tls.existingSecret }}
          scheme: HTTPS
          {{- end }}
        periodSeconds: 5
      resources:
        {{- toYaml .Values.resources | nindent 8 }}
      securityContext:
        {{- toYaml .Values.securityContext | nindent 8 }}
      volumeMounts:
        - name: config
          mountPath: /etc/ferry
          readOnly: true
        - name: data
          mountPath: /var/lib/ferry
        - name: tmp
          mountPath: /tmp
        {{- if and .Values.p2p.enabled (include "ferry.clusterKeySecret" .) }}
        - name: cluster-key
          mountPath: {{ include "ferry.clusterKeyDir" . }}
          readOnly: true
        {{- end }}
        {{- if .Values.tls.existingSecret }}
        - name: tls
          mountPath: /etc/ferry-tls
          readOnly: true
        {{- end }}
        {{- if .Values.auth.htpasswdSecret }}
        - name: htpasswd
          mountPath: /etc/ferry-auth
          readOnly: true
        {{- end }}
        {{- if and .Values.auth.tokens .Values.auth.signingKeySecret }}
        - name: token-key
          mountPath: /etc/ferry-token-key
          readOnly: true
        {{- end }}
  volumes:
    - name: config
      configMap:
        name: {{ include "ferry.fullname" . }}
    - name: tmp
      emptyDir: {}
    - name: data
      {{- if eq .Values.storage.type "hostPath" }}
      hostPath:
        path: {{ .Values.storage.hostPath }}
        type: DirectoryOrCreate
      {{- else if eq .Values.storage.type "pvc" }}
      persistentVolumeClaim:
        claimName: {{ .Values.storage.existingClaim | default (include "ferry.fullname" .) }}
      {{- else }}
      emptyDir:
        sizeLimit: {{ .Values.storage.size }}
      {{- end }}
    {{- if and .Values.p2p.enabled (include "ferry.clusterKeySecret" .) }}
    - name: cluster-key
      secret:
        secretName: {{ include "ferry.clusterKeySecret" . }}
        # 0440: readable by the pod's group (fsGroup), whatever the key is called in the Secret.
        defaultMode: 288
        items:
          - key: {{ .Values.p2p.clusterKey.key }}
            path: cluster.key
    {{- end }}
    {{- /* 0440: root-owned and readable by the pod's group (fsGroup), which ferry accepts for
           secret files owned by root; nobody else can read them. */}}
    {{- if .Values.tls.existingSecret }}
    - name: tls
      secret:
        secretName: {{ .Values.tls.existingSecret }}
        defaultMode: 288
        items:
          - key: tls.crt
            path: tls.crt
          - key: tls.key
            path: tls.key
    {{- end }}
    {{- if .Values.auth.htpasswdSecret }}
    - name: htpasswd
      secret:
        secretName: {{ .Values.auth.htpasswdSecret }}
        defaultMode: 288
        items:
          - key: {{ .Values.auth.htpasswdKey }}
            path: htpasswd
    {{- end }}
    {{- if and .Values.auth.tokens .Values.auth.signingKeySecret }}
    - name: token-key
      secret:
        secretName: {{ .Values.auth.signingKeySecret }}
        defaultMode: 288
        items:
          - key: {{ .Values.auth.signingKeyKey }}
            path: token-signing.key
    {{- end }}
    {{- if .Values.containerdMirror.enabled }}
    - name: containerd-hosts
      hostPath:
        path: {{ .Values.containerdMirror.hostsDir }}
        type: DirectoryOrCreate
    {{- end }}
  {{- with .Values.nodeSelector }}
  nodeSelector:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with .Values.tolerations }}
  tolerations:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with .Values.affinity }}
  affinity:
    {{- toYaml . | nindent 4 }}
  {{- end }}
{{- end -}}
