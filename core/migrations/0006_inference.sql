-- AI diagnostic support. An `infer` job runs a deployed model version on a clinical slide;
-- its result (result.json, heatmap.png under inference/{slide}/{model}/{version}/) is listed
-- here once every object is written. Results are clinical-tier data: they are reached only
-- through the slide, by those who may see the slide.

CREATE TABLE inference_results (
    slide_id TEXT NOT NULL,
    model_name TEXT NOT NULL,
    model_version BIGINT NOT NULL,
    job_id TEXT,
    -- The model's call: the positive class's slide score against the threshold, and the class
    -- that implies; the classes it can name (JSON list).
    score DOUBLE PRECISION NOT NULL,
    predicted TEXT NOT NULL,
    positive TEXT NOT NULL,
    threshold DOUBLE PRECISION NOT NULL,
    classes TEXT NOT NULL,
    patches BIGINT NOT NULL,
    result_sha256 TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (slide_id, model_name, model_version)
);

CREATE INDEX inference_results_by_model ON inference_results (model_name, model_version);

-- Agreement of each AI result with the final diagnosis, recorded at sign-out and each
-- amendment: the feedback loop. `agree` is NULL where the final diagnosis is not a class the
-- model can name.
CREATE TABLE ai_feedback (
    case_id TEXT NOT NULL,
    slide_id TEXT NOT NULL,
    model_name TEXT NOT NULL,
    model_version BIGINT NOT NULL,
    predicted TEXT NOT NULL,
    ai_positive BIGINT NOT NULL,
    final_code TEXT NOT NULL,
    final_positive BIGINT NOT NULL,
    agree BIGINT,
    report_version BIGINT NOT NULL,
    recorded_at BIGINT NOT NULL,
    PRIMARY KEY (case_id, slide_id, model_name, model_version)
);

CREATE INDEX ai_feedback_by_model ON ai_feedback (model_name, model_version);
CREATE INDEX ai_feedback_by_slide ON ai_feedback (slide_id);

-- A hub may hide AI results from a pathologist until they have entered their own read.
ALTER TABLE hospitals ADD COLUMN ai_after_first_read BIGINT NOT NULL DEFAULT 0;

-- Research slides whose AI result disagreed with the final diagnosis (JSON list of
-- {model, version, predicted}; the final diagnosis is the slide's label), so dataset versions
-- can flag them for review.
ALTER TABLE research_slides ADD COLUMN ai_discordant TEXT;
