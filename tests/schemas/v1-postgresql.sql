CREATE TABLE hybridflow_schema (
	id INTEGER NOT NULL, 
	version INTEGER NOT NULL, 
	updated_at TIMESTAMP WITH TIME ZONE NOT NULL, 
	PRIMARY KEY (id)
);

CREATE TABLE tenants (
	id SERIAL NOT NULL, 
	instance VARCHAR NOT NULL, 
	prompt TEXT NOT NULL, 
	evolution_url VARCHAR, 
	api_key_enc TEXT, 
	webhook_secret_enc TEXT, 
	jwt_key_enc TEXT, 
	model VARCHAR, 
	resume_after FLOAT, 
	debounce FLOAT, 
	api_version VARCHAR(4) NOT NULL, 
	allow_groups BOOLEAN NOT NULL, 
	send_presence BOOLEAN NOT NULL, 
	mark_read BOOLEAN NOT NULL, 
	created_at TIMESTAMP WITH TIME ZONE NOT NULL, 
	updated_at TIMESTAMP WITH TIME ZONE NOT NULL, 
	removed_at TIMESTAMP WITH TIME ZONE, 
	PRIMARY KEY (id), 
	UNIQUE (instance)
);

CREATE TABLE sessions (
	id SERIAL NOT NULL, 
	tenant_id INTEGER NOT NULL, 
	chat_id VARCHAR NOT NULL, 
	chat_kind VARCHAR(20) NOT NULL, 
	push_name VARCHAR, 
	is_paused BOOLEAN NOT NULL, 
	pause_reason VARCHAR, 
	paused_by VARCHAR, 
	paused_at TIMESTAMP WITH TIME ZONE, 
	resumes_at TIMESTAMP WITH TIME ZONE, 
	last_human_at TIMESTAMP WITH TIME ZONE, 
	last_message_at TIMESTAMP WITH TIME ZONE, 
	created_at TIMESTAMP WITH TIME ZONE NOT NULL, 
	updated_at TIMESTAMP WITH TIME ZONE NOT NULL, 
	PRIMARY KEY (id), 
	CONSTRAINT uq_sessions_tenant_chat UNIQUE (tenant_id, chat_id), 
	FOREIGN KEY(tenant_id) REFERENCES tenants (id)
);

CREATE INDEX ix_sessions_paused_last_human ON sessions (is_paused, last_human_at);

CREATE INDEX ix_sessions_paused_resumes_at ON sessions (is_paused, resumes_at);

CREATE INDEX ix_sessions_tenant_last_message ON sessions (tenant_id, last_message_at);

CREATE TABLE messages (
	id SERIAL NOT NULL, 
	tenant_id INTEGER NOT NULL, 
	session_id INTEGER NOT NULL, 
	message_id VARCHAR NOT NULL, 
	chat_id VARCHAR NOT NULL, 
	event VARCHAR(60) NOT NULL, 
	direction VARCHAR(20) NOT NULL, 
	from_me BOOLEAN NOT NULL, 
	kind VARCHAR(20) NOT NULL, 
	message_type VARCHAR, 
	text TEXT, 
	push_name VARCHAR, 
	wa_timestamp TIMESTAMP WITH TIME ZONE, 
	received_at TIMESTAMP WITH TIME ZONE NOT NULL, 
	action VARCHAR(30) NOT NULL, 
	raw TEXT NOT NULL, 
	PRIMARY KEY (id), 
	CONSTRAINT uq_messages_tenant_message UNIQUE (tenant_id, message_id), 
	FOREIGN KEY(tenant_id) REFERENCES tenants (id), 
	FOREIGN KEY(session_id) REFERENCES sessions (id)
);

CREATE INDEX ix_messages_session_received ON messages (session_id, received_at);

CREATE TABLE reply_jobs (
	id SERIAL NOT NULL, 
	tenant_id INTEGER NOT NULL, 
	session_id INTEGER NOT NULL, 
	chat_id VARCHAR NOT NULL, 
	trigger_message_id VARCHAR NOT NULL, 
	last_message_id VARCHAR, 
	status VARCHAR(20) NOT NULL, 
	due_at TIMESTAMP WITH TIME ZONE NOT NULL, 
	attempts INTEGER NOT NULL, 
	lease_until TIMESTAMP WITH TIME ZONE, 
	claimed_by VARCHAR, 
	reply_text TEXT, 
	sent_message_id VARCHAR, 
	last_error TEXT, 
	received_at TIMESTAMP WITH TIME ZONE NOT NULL, 
	created_at TIMESTAMP WITH TIME ZONE NOT NULL, 
	updated_at TIMESTAMP WITH TIME ZONE NOT NULL, 
	attempted_at TIMESTAMP WITH TIME ZONE, 
	sent_at TIMESTAMP WITH TIME ZONE, 
	PRIMARY KEY (id), 
	CONSTRAINT uq_reply_jobs_trigger UNIQUE (tenant_id, trigger_message_id), 
	FOREIGN KEY(tenant_id) REFERENCES tenants (id), 
	FOREIGN KEY(session_id) REFERENCES sessions (id)
);

CREATE INDEX ix_reply_jobs_sent_message ON reply_jobs (tenant_id, sent_message_id);

CREATE INDEX ix_reply_jobs_session_created ON reply_jobs (session_id, created_at);

CREATE INDEX ix_reply_jobs_status_due ON reply_jobs (status, due_at);

CREATE UNIQUE INDEX uq_reply_jobs_one_queued_per_session ON reply_jobs (session_id) WHERE status = 'queued';

CREATE TABLE session_events (
	id SERIAL NOT NULL, 
	tenant_id INTEGER NOT NULL, 
	session_id INTEGER NOT NULL, 
	at TIMESTAMP WITH TIME ZONE NOT NULL, 
	change VARCHAR(20) NOT NULL, 
	reason VARCHAR(30) NOT NULL, 
	actor VARCHAR(60) NOT NULL, 
	message_id VARCHAR, 
	resumes_at TIMESTAMP WITH TIME ZONE, 
	PRIMARY KEY (id), 
	FOREIGN KEY(tenant_id) REFERENCES tenants (id), 
	FOREIGN KEY(session_id) REFERENCES sessions (id)
);

CREATE INDEX ix_session_events_session_at ON session_events (session_id, at);
