"""Named schema migrations, applied in order and recorded in the `migrations` table.

A migration is SQL text, or a function of the connection for one that computes values in Python.
"""

from __future__ import annotations

from collections import defaultdict


def _settings_0010(db) -> None:
    """Every grid link records the setting it was requested at (`evalsvc.setting`).

    Cells sampled before keep their keys and images; their setting is their own values, on the run's
    base. The base model's and other non-LoRA cells are linked at every LoRA strength the run's LoRAs
    were sampled at, so they stay the reference row of each. Set-level scores and votes gain the setting
    where it is unambiguous; set scores that pooled the images of several settings are dropped (`score`
    recomputes them).
    """
    from ..setting import Setting

    rows = db.execute(
        "SELECT g.run, g.suite_hash, g.prompt_id, g.key, w.cfg, w.steps, w.sampler, w.width, w.height, "
        "w.lora_scale, w.clip_skip, w.precision, c.kind = 'lora', r.base_sha256, w.checkpoint FROM grid_cells g "
        "JOIN work w ON w.key = g.key JOIN runs r ON r.name = g.run "
        "LEFT JOIN checkpoints c ON c.sha256 = w.checkpoint").fetchall()
    scales = defaultdict(set)
    for run, *_, scale, _, _, is_lora, _, _ in rows:
        if is_lora:
            scales[run].add(float(scale))
    links, by_checkpoint = [], defaultdict(lambda: defaultdict(set))  # (run, sha, cfg) -> setting -> keys
    for run, suite, prompt_id, key, cfg, steps, sampler, width, height, scale, skip, precision, is_lora, base, sha \
            in rows:
        for s in ([float(scale)] if is_lora else sorted(scales[run]) or [1.0]):
            setting = Setting(cfg=float(cfg), steps=int(steps), sampler=sampler, size=(int(width), int(height)),
                              lora_scale=s, clip_skip=int(skip), precision=precision, base=base)
            links.append([run, suite, prompt_id, key, setting.key])
            by_checkpoint[(run, sha, float(cfg))][setting.key].add(key)
    db.execute("CREATE TABLE grid_cells_0010 (run TEXT NOT NULL, suite_hash TEXT NOT NULL, prompt_id TEXT NOT NULL, "
               "key TEXT NOT NULL, setting TEXT NOT NULL, PRIMARY KEY (run, key, setting))")
    if links:
        db.execute("INSERT INTO grid_cells_0010 SELECT DISTINCT * FROM (SELECT unnest(?::VARCHAR[]), "
                   "unnest(?::VARCHAR[]), unnest(?::VARCHAR[]), unnest(?::VARCHAR[]), unnest(?::VARCHAR[]))",
                   [list(c) for c in zip(*links)])
    db.execute("DROP TABLE grid_cells")
    db.execute("ALTER TABLE grid_cells_0010 RENAME TO grid_cells")

    old = db.execute("SELECT run, checkpoint, cfg, prompt_id, metric, version, value, std, n, details, created_at "
                     "FROM set_scores").fetchall()
    db.execute("DROP TABLE set_scores")
    db.execute("""CREATE TABLE set_scores (
            run TEXT NOT NULL, checkpoint TEXT NOT NULL, setting TEXT NOT NULL, prompt_id TEXT NOT NULL,
            metric TEXT NOT NULL, version TEXT NOT NULL, value DOUBLE, std DOUBLE, n INTEGER NOT NULL,
            details JSON, created_at TIMESTAMP DEFAULT current_timestamp,
            PRIMARY KEY (run, checkpoint, setting, prompt_id, metric))""")
    for run, sha, cfg, prompt_id, metric, version, value, std, n, details, created in old:
        settings = by_checkpoint.get((run, sha, float(cfg)), {})
        if len({frozenset(keys) for keys in settings.values()}) == 1:  # the same images at each: not pooled
            for setting in settings:
                db.execute("INSERT INTO set_scores VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                           [run, sha, setting, prompt_id, metric, version, value, std, n, details, created])

    for table in ("vote_pairs", "votes"):
        db.execute(f"ALTER TABLE {table} ADD COLUMN left_setting TEXT")
        db.execute(f"ALTER TABLE {table} ADD COLUMN right_setting TEXT")
    # A pair was drawn at one CFG of two checkpoints' cells: the setting both cells share in the run.
    db.execute("""UPDATE vote_pairs SET left_setting = m.setting, right_setting = m.setting FROM (
            SELECT p.token, min(gl.setting) AS setting FROM vote_pairs p
            JOIN grid_cells gl ON gl.run = p.run AND gl.key = p.left_key
            JOIN grid_cells gr ON gr.run = p.run AND gr.key = p.right_key AND gr.setting = gl.setting
            GROUP BY p.token) m WHERE vote_pairs.token = m.token""")
    db.execute("UPDATE votes SET left_setting = p.left_setting, right_setting = p.right_setting FROM vote_pairs p "
               "WHERE p.token = votes.token")


def _job_progress_0014(db) -> None:
    """Jobs report progress (cells done of total, when last told) and can be cancelled: who asked and when, and
    the state `cancelled`. The state's CHECK cannot be altered in DuckDB, so the table is rebuilt, rows kept."""
    kept = ("id, command, run, args, state, submitted_by, submitted_at, started_at, finished_at, exit_code, "
            "output")
    db.execute("""CREATE TABLE jobs_0014 (
            id BIGINT PRIMARY KEY DEFAULT nextval('job_ids'),
            command TEXT NOT NULL,
            run TEXT NOT NULL,
            args JSON NOT NULL,
            state TEXT NOT NULL CHECK (state IN ('queued', 'running', 'done', 'failed', 'cancelled')),
            submitted_by TEXT NOT NULL,
            submitted_at TIMESTAMP NOT NULL,
            started_at TIMESTAMP,
            finished_at TIMESTAMP,
            exit_code INTEGER,
            output TEXT,
            cells_done INTEGER,
            cells_total INTEGER,
            progress_at TIMESTAMP,
            cancel_by TEXT,
            cancel_at TIMESTAMP)""")
    db.execute(f"INSERT INTO jobs_0014 ({kept}) SELECT {kept} FROM jobs")
    db.execute("DROP TABLE jobs")
    db.execute("ALTER TABLE jobs_0014 RENAME TO jobs")


MIGRATIONS: tuple[tuple[str, object], ...] = (
    (
        "0001_catalog",
        """
        CREATE TABLE runs (
            name TEXT PRIMARY KEY,
            base_sha256 TEXT,
            created_at TIMESTAMP DEFAULT current_timestamp
        );
        CREATE TABLE checkpoints (
            sha256 TEXT PRIMARY KEY,
            path TEXT NOT NULL,
            file_name TEXT NOT NULL,
            kind TEXT NOT NULL,
            arch TEXT NOT NULL,
            lora_format TEXT,
            epoch INTEGER,
            step BIGINT,
            ema BOOLEAN NOT NULL,
            addnet_hash TEXT,
            config_path TEXT,
            metadata JSON,
            status TEXT NOT NULL DEFAULT 'ok',
            error TEXT,
            added_at TIMESTAMP DEFAULT current_timestamp
        );
        CREATE TABLE run_checkpoints (
            run TEXT NOT NULL,
            sha256 TEXT NOT NULL,
            role TEXT NOT NULL,
            PRIMARY KEY (run, sha256)
        );
        """,
    ),
    (
        "0002_suites",
        """
        CREATE TABLE suites (
            hash TEXT PRIMARY KEY,
            name TEXT NOT NULL,
            source TEXT,
            description TEXT,
            added_at TIMESTAMP DEFAULT current_timestamp
        );
        CREATE TABLE prompts (
            suite_hash TEXT NOT NULL,
            prompt_id TEXT NOT NULL,
            position INTEGER NOT NULL,
            text TEXT NOT NULL,
            negative TEXT NOT NULL,
            tags TEXT[],
            role TEXT NOT NULL,
            PRIMARY KEY (suite_hash, prompt_id)
        );
        """,
    ),
    (
        "0003_work",
        """
        CREATE TABLE work (
            key TEXT PRIMARY KEY,
            checkpoint TEXT NOT NULL,
            base TEXT,
            prompt TEXT NOT NULL,
            negative TEXT NOT NULL,
            seed BIGINT NOT NULL,
            cfg DOUBLE NOT NULL,
            steps INTEGER NOT NULL,
            sampler TEXT NOT NULL,
            width INTEGER NOT NULL,
            height INTEGER NOT NULL,
            lora_scale DOUBLE NOT NULL,
            clip_skip INTEGER NOT NULL,
            precision TEXT NOT NULL,
            state TEXT NOT NULL DEFAULT 'pending',
            lease_owner TEXT,
            attempts INTEGER NOT NULL DEFAULT 0,
            error TEXT,
            updated_at TIMESTAMP DEFAULT current_timestamp
        );
        CREATE TABLE grid_cells (
            run TEXT NOT NULL,
            suite_hash TEXT NOT NULL,
            prompt_id TEXT NOT NULL,
            key TEXT NOT NULL,
            PRIMARY KEY (run, key)
        );
        CREATE TABLE samples (
            key TEXT PRIMARY KEY,
            image_path TEXT NOT NULL,
            image_sha256 TEXT NOT NULL,
            infotext TEXT NOT NULL,
            seconds DOUBLE,
            created_at TIMESTAMP DEFAULT current_timestamp
        );
        """,
    ),
    (
        "0004_losses",
        """
        CREATE TABLE losses (
            run TEXT NOT NULL,
            step BIGINT NOT NULL,
            epoch INTEGER NOT NULL,
            loss DOUBLE NOT NULL,
            lr DOUBLE,
            PRIMARY KEY (run, step)
        );
        """,
    ),
    (
        "0005_scores",
        """
        CREATE TABLE embeddings (
            image_sha256 TEXT NOT NULL,
            backbone TEXT NOT NULL,
            vector FLOAT[] NOT NULL,
            PRIMARY KEY (image_sha256, backbone)
        );
        CREATE TABLE scores (
            key TEXT NOT NULL,
            metric TEXT NOT NULL,
            version TEXT NOT NULL,
            value DOUBLE,
            details JSON,
            created_at TIMESTAMP DEFAULT current_timestamp,
            PRIMARY KEY (key, metric)
        );
        CREATE TABLE set_scores (
            run TEXT NOT NULL,
            checkpoint TEXT NOT NULL,
            cfg DOUBLE NOT NULL,
            prompt_id TEXT NOT NULL,
            metric TEXT NOT NULL,
            version TEXT NOT NULL,
            value DOUBLE,
            std DOUBLE,
            n INTEGER NOT NULL,
            details JSON,
            created_at TIMESTAMP DEFAULT current_timestamp,
            PRIMARY KEY (run, checkpoint, cfg, prompt_id, metric)
        );
        """,
    ),
    (
        "0006_votes",
        """
        CREATE TABLE vote_pairs (
            token TEXT PRIMARY KEY,
            run TEXT NOT NULL,
            voter TEXT NOT NULL,
            left_key TEXT NOT NULL,
            right_key TEXT NOT NULL,
            left_image TEXT NOT NULL,
            right_image TEXT NOT NULL,
            issued_at TIMESTAMP NOT NULL,
            expires_at TIMESTAMP NOT NULL
        );
        CREATE TABLE votes (
            token TEXT PRIMARY KEY,
            run TEXT NOT NULL,
            voter TEXT NOT NULL,
            left_checkpoint TEXT NOT NULL,
            right_checkpoint TEXT NOT NULL,
            prompt_id TEXT NOT NULL,
            seed BIGINT NOT NULL,
            cfg DOUBLE NOT NULL,
            answer TEXT NOT NULL,
            voted_at TIMESTAMP NOT NULL
        );
        CREATE TABLE decisions (
            run TEXT NOT NULL,
            checkpoint TEXT NOT NULL,
            decided_by TEXT NOT NULL,
            reason TEXT NOT NULL,
            decided_at TIMESTAMP NOT NULL
        );
        """,
    ),
    (
        "0007_jobs",
        """
        CREATE SEQUENCE job_ids START 1;
        CREATE TABLE jobs (
            id BIGINT PRIMARY KEY DEFAULT nextval('job_ids'),
            command TEXT NOT NULL,
            run TEXT NOT NULL,
            args JSON NOT NULL,
            state TEXT NOT NULL CHECK (state IN ('queued', 'running', 'done', 'failed')),
            submitted_by TEXT NOT NULL,
            submitted_at TIMESTAMP NOT NULL,
            started_at TIMESTAMP,
            finished_at TIMESTAMP,
            exit_code INTEGER,
            output TEXT
        );
        """,
    ),
    (
        "0008_regressions",
        """
        CREATE SEQUENCE regression_ids START 1;
        CREATE TABLE regressions (
            id BIGINT PRIMARY KEY DEFAULT nextval('regression_ids'),
            created_at TIMESTAMP NOT NULL,
            baseline_sha256 TEXT NOT NULL,
            candidate_sha256 TEXT NOT NULL,
            baseline_name TEXT NOT NULL,
            candidate_name TEXT NOT NULL,
            suite_name TEXT NOT NULL,
            suite_hash TEXT NOT NULL,
            gates_hash TEXT NOT NULL,
            verdict TEXT NOT NULL,
            report_json JSON NOT NULL,
            report_md TEXT NOT NULL,
            report_html TEXT NOT NULL
        );
        """,
    ),
    (
        "0009_run_scoring",
        """
        CREATE TABLE run_scoring (
            run TEXT PRIMARY KEY,
            backbone_model TEXT NOT NULL,
            backbone_weights TEXT NOT NULL,
            reference TEXT,
            trigger TEXT,
            updated_at TIMESTAMP NOT NULL
        );
        """,
    ),
    ("0010_settings", _settings_0010),
    (
        "0011_stacks",
        """
        ALTER TABLE work ADD COLUMN IF NOT EXISTS stack TEXT;
        """,
    ),
    (
        "0013_vote_sessions",
        """
        ALTER TABLE vote_pairs ADD COLUMN session TEXT;
        ALTER TABLE vote_pairs ADD COLUMN skipped_at TIMESTAMP;
        ALTER TABLE decisions ADD COLUMN overrides TEXT;
        """,
    ),
    ("0014_job_progress", _job_progress_0014),
    (
        "0015_suite_goal",
        """
        ALTER TABLE suites ADD COLUMN IF NOT EXISTS goal TEXT;
        """,
    ),
)
