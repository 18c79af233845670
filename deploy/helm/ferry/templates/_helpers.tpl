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
  {{- if and (eq .Values.storage.type "hostPath") .Values.storage.hostPathPermissions.enabled }}
  initContainers:
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
      startupProbe:
        httpGet:
          path: /healthz
          port: registry
        periodSeconds: 2
        failureThreshold: 60
      livenessProbe:
        httpGet:
          path: /healthz
          port: registry
        periodSeconds: 10
        failureThreshold: 3
      readinessProbe:
        httpGet:
          path: /readyz
          port: registry
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
