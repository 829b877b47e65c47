"""`make mutate`: prove the tests can fail. Each mutation below breaks one promise the README makes, in a throwaway
copy of the repository; the tests named beside it must then fail. The table says which test killed each mutation;
any mutation that survives (or whose tests cannot even run) makes the exit status non-zero.

    python tests/mutations.py                 # every mutation
    python tests/mutations.py dev-selects     # only those named
    python tests/mutations.py --check         # only check that every mutation still applies (no tests run)

A mutation is one exact text replacement; its old text must occur exactly once in its file, so a mutation that no
longer fits the code fails loudly instead of silently testing nothing. `make test` runs first in CI: a kill counts
only because those tests pass on the unmutated code.
"""
from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
COPIED = ("autoplace", "tests", "search_spaces", "README.md", "pyproject.toml")  # what the tests read
TIMEOUT = 600  # seconds for one mutation's tests


@dataclass
class Mutation:
    name: str
    promise: str
    file: str
    old: str
    new: str
    tests: tuple[str, ...]  # pytest node ids (or -k expressions), run with -x in this order


MODEL, SEARCH, ARTIFACT = "tests/test_model.py", "tests/test_search.py", "tests/test_artifact.py"
CALIBRATION, WINNER, ENSEMBLE = "tests/test_calibration.py", "tests/test_winner.py", "tests/test_ensemble.py"
TRAINER = "tests/test_trainer.py"
ANSWERS = "tests/test_answers.py"

MUTATIONS = [
    Mutation("dev-selects", "dev selects: the best-dev prompt is kept, not the last",
             "autoplace/trainer.py", "stale = 0 if best is None or score > best[0] else stale + 1", "stale = 0",
             (f"{TRAINER}::test_dev_selects_the_kept_prompt_when_dev_rises_then_falls",)),
    Mutation("test-read-by-a-trial", "test is read once, for the winner only",
             "autoplace/study/worker.py", '        trial.set_user_attr("dev", result.dev)\n',
             '        trial.set_user_attr("dev", result.dev)\n'
             '        trial.set_user_attr("test", run.evaluate("test"))\n',
             (f"{SEARCH}::test_the_winner_is_tested_on_the_backbone_and_precision_its_trials_ran_on[0]",
              f"{SEARCH}::test_test_split_is_read_only_after_the_search")),
    Mutation("backbone-trainable", "the backbone is frozen: no gradients, weights unchanged",
             "autoplace/backbones.py", "model.eval().requires_grad_(False).to(device)", "model.eval().to(device)",
             (f"{MODEL}::test_only_prompt_gets_gradients_backbone_unchanged_and_loss_falls[tiny-gpt2-none]",)),
    Mutation("backbone-in-optimizer", "the backbone is frozen: no optimizer state on it",
             "autoplace/trainer.py",
             "params = [p for p in model.encoder.parameters() if p.requires_grad and p.numel()]",
             "params = [p for p in (*model.encoder.parameters(), *model.backbone.model.parameters()) if p.numel()]",
             (f"{TRAINER}::test_the_optimizer_holds_the_prompt_and_nothing_of_the_backbone",)),
    Mutation("prune-at-last-step", "no pruning at a trial's last step",
             "autoplace/study/worker.py", "return is_reference or step >= last_step or not prune",
             "return is_reference or not prune",
             (f"{SEARCH}::test_a_trial_is_never_pruned_at_its_last_step_nor_a_reference_but_the_pruner_is_always_asked",)),
    Mutation("sampled-before-references", "the reference placements are enqueued first",
             "autoplace/study/opening.py", "        references = space.references(causal)\n",
             "        references = space.references(causal)\n"
             "        study.enqueue_trial({}, skip_if_exists=False)\n",
             (f"{SEARCH}::test_a_new_study_queues_the_references_first_then_exactly_n_trials",)),
    Mutation("references-on-the-screens-best", "the references stay on the task's template unless the screen's best "
             "beats it", "autoplace/study/screen.py", '"key": best.key if word == "better" else own.key',
             '"key": best.key',
             ("tests/test_screen.py::test_the_references_stay_on_the_tasks_own_template_unless_the_screens_best_beats_it",)),
    Mutation("restart-keeps-the-first", "a one-answer run trained again keeps the better of the two by dev",
             "autoplace/runner.py", "            result = retried\n", "            pass\n",
             ("tests/test_trainer.py::test_restarts_keep_the_better_run_by_dev",)),
    Mutation("restart-forgets-its-seed", "a restarted prompt's artifact names the seed it was trained with",
             "autoplace/runner.py", '"train": {**cfg.to_dict(), "seed": result.seed}', '"train": cfg.to_dict()',
             ("tests/test_trainer.py::test_a_one_answer_run_is_trained_again_from_a_fresh_seed_and_exports_the_prompt_it_kept",)),
    Mutation("budget-not-exact", "exact trial budget across workers",
             "autoplace/study/storage.py", "    for _ in range(n_trials - len(budget_trials(study))):",
             "    for _ in range(n_trials):",
             (f"{SEARCH}::test_a_new_study_queues_the_references_first_then_exactly_n_trials",
              f"{SEARCH}::test_two_workers_share_one_journal_storage")),
    Mutation("interrupted-not-retried", "heartbeat retry: a dead worker's trial is queued again",
             "autoplace/study/storage.py", "    RetryHeartbeatStaleTrialCallback()(study, frozen)", "    pass",
             ("tests/test_faults.py::test_a_dead_workers_trial_is_failed_and_retried_once",)),
    Mutation("stale-heartbeat-not-retried", "heartbeat retry: a stale trial elsewhere is queued again",
             "autoplace/study/storage.py", "optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=MAX_RETRY)",
             "None",
             ("tests/test_faults.py::test_a_dead_workers_trial_is_failed_and_retried_once",)),
    Mutation("checksum-ignored", "the artifact's checksum is checked on load",
             "autoplace/artifact.py", 'if sha256(path / WEIGHTS_FILE) != meta.get("weights_sha256"):', "if False:",
             (f"{ARTIFACT}::test_truncated_or_modified_weights_are_refused[tiny-gpt2]",)),
    Mutation("format-version-ignored", "the artifact's format version is checked on load",
             "autoplace/artifact.py",
             'if not isinstance(meta, dict) or meta.get("format_version") != FORMAT_VERSION:',
             "if not isinstance(meta, dict):",
             ("tests/test_bad_input.py::test_bad_input[artifact format version]",)),
    Mutation("backbone-check-ignored", "an artifact is refused on another backbone",
             "autoplace/artifact.py", "if key in saved and saved[key] != signature[key]:", "if False:",
             (f"{ARTIFACT}::test_missing_file_and_other_backbone_are_refused[tiny-gpt2]",)),
    Mutation("prompt-rows-reversed", "one-hot placement puts each prompt row at its slot",
             "autoplace/injection.py", ".to(rows.dtype) @ vectors", ".to(rows.dtype) @ vectors.flip(0)",
             ("-k", "test_prompt_vectors_land_exactly_at_slot_positions", MODEL)),
    Mutation("label-rows-swapped", "lean head rows equal the full logits",
             "autoplace/model.py", "head.weight[self.label_ids]", "head.weight[self.label_ids.flip(0)]",
             (f"{MODEL}::test_lean_scores_equal_full_model_logits_at_answer[tiny-gpt2]",)),
    Mutation("prefix-cache-answer-off-by-one", "the prefix cache equals the uncached path",
             "autoplace/model.py", "            start = answer - cut\n", "            start = answer - cut - 1\n",
             ("-k", "test_cached_scores_and_prompt_gradients_equal_the_uncached_forward",
              "tests/test_prefix_cache.py")),
    Mutation("truncate-shortest-field", "truncation cuts the longest field first",
             "autoplace/featurize.py", "longest = max(fields, key=lambda i: len(texts[i]), default=None)",
             "longest = min(fields, key=lambda i: len(texts[i]), default=None)",
             (f"{MODEL}::test_truncation_cuts_the_longest_field_first",)),
    Mutation("truncation-forgets-prompts", "truncation keeps the prompts within max length",
             "autoplace/featurize.py", "p.length if isinstance(p, Slot) else", "0 if isinstance(p, Slot) else",
             (f"{MODEL}::test_truncation_shortens_fields_only_and_keeps_slots_and_mask[tiny-gpt2]",)),
    Mutation("truncation-forgets-mask", "truncation keeps [MASK] within max length",
             "autoplace/featurize.py", "(0 if self.causal else 1) if isinstance(p, Mask)", "0 if isinstance(p, Mask)",
             (f"{MODEL}::test_truncation_shortens_fields_only_and_keeps_slots_and_mask[tiny-bert]",)),
    Mutation("label-word-last-token", "label words are scored by their first token",
             "autoplace/featurize.py", "        return ids[0]", "        return ids[-1]",
             (f"{MODEL}::test_multi_token_label_words_score_their_first_token",)),
    Mutation("whole-answer-first-token-only", "answer_scoring full sums the log-probabilities of every token",
             "autoplace/model.py", "        total = per_token.sum(1)\n", "        total = per_token[:, 0]\n",
             (f"{ANSWERS}::test_whole_answer_scores_match_a_brute_force_computation[tiny-gpt2-full]",)),
    Mutation("masked-lm-one-mask", "a masked LM scores an answer with one [MASK] per token",
             "autoplace/featurize.py", "masks = [self.tokenizer.mask_token_id] * len(tokens)",
             "masks = [self.tokenizer.mask_token_id]",
             (f"{ANSWERS}::test_whole_answer_scores_match_a_brute_force_computation[tiny-bert-full]",)),
    Mutation("em-any-option", "MultiRC exact match needs every option of a question right",
             "autoplace/tasks/kinds.py", "by_group.get(group, True) and ok", "by_group.get(group, False) or ok",
             (f"{ANSWERS}::test_multirc_f1a_and_em_match_a_hand_computation",)),
    Mutation("patience-ignored", "patience stops a trial once dev stops improving",
             "autoplace/trainer.py", "if cfg.patience and stale >= cfg.patience and step < steps:", "if False:",
             ("-k", "test_patience_stops_once_dev_has_not_improved", TRAINER)),
    Mutation("queue-top-up-unlocked", "joiners asking for more trials at once queue exactly N",
             "autoplace/study/storage.py", "    with study_lock(url, name, waiting, patience=patience):\n",
             "    with contextlib.nullcontext():\n",
             ("tests/test_faults.py::test_joiners_asking_for_more_trials_at_once_queue_exactly_n[sqlite]",)),
    Mutation("password-shown", "passwords are redacted",
             "autoplace/study/storage.py", r'return re.sub(r"(://[^:/@]+):[^@/]*@", r"\1:***@", url)', "return url",
             ("-k", "test_bad_storage_url_gives_one_line_without_password", SEARCH)),
    Mutation("encoder-unseeded", "seeds reproduce a run: the encoder's layers follow the seed",
             "autoplace/pipeline.py", "        torch.manual_seed(cfg.seed)\n        encoder = PromptEncoder(",
             "        encoder = PromptEncoder(",
             ("-k", "test_encoder_weights_depend_on_the_seed_only", MODEL)),
    Mutation("batch-order-unseeded", "seeds reproduce a run: the batch order follows the seed",
             "autoplace/trainer.py", "order_rng = torch.Generator().manual_seed(cfg.seed)",
             "order_rng = torch.Generator(); order_rng.seed()",
             (f"{TRAINER}::test_two_runs_of_one_seed_give_the_same_prompt",)),
    Mutation("calibration-not-applied", "calibration: scores are divided by p_cf",
             "autoplace/calibration.py", "return scores.float().log_softmax(-1) - log_prior.to(scores.device)",
             "return scores.float().log_softmax(-1)",
             (f"{CALIBRATION}::test_calibration_divides_by_the_content_free_distribution_as_computed_by_hand",
              f"{CALIBRATION}::test_a_calibrated_prompt_scores_dev_with_its_content_free_prior")),
    Mutation("calibration-of-the-last-prompt", "calibration: p_cf is the kept prompt's",
             "autoplace/trainer.py",
             "        model.encoder.load_state_dict(best[3])\n        refresh_calibration(model)\n",
             "        model.encoder.load_state_dict(best[3])\n",
             (f"{TRAINER}::test_dev_selects_the_kept_prompt_when_dev_rises_then_falls[calibrated]",)),
    Mutation("cv-picks-best-dev", "k-fold selection: the best mean over folds wins",
             "autoplace/study/winner.py",
             'winner = max(results, key=lambda r: (not r["one_answer"], r["mean"], r["search_dev"]))',
             'winner = max(results, key=lambda r: r["search_dev"])',
             (f"{WINNER}::test_select_cv_picks_the_best_mean_over_folds_not_the_best_dev",)),
    Mutation("cv-folds-swapped", "k-fold selection: each fold is held out once",
             "autoplace/study/winner.py", 'self.train_rows if split == "train" else self.held_rows',
             'self.held_rows if split == "train" else self.train_rows',
             (f"{WINNER}::test_folds_partition_train_and_dev_and_never_hold_test",)),
    Mutation("ensemble-first-member-only", "ensembles average their members' probabilities",
             "autoplace/ensemble.py", "return torch.stack(probs).mean(0).log()", "return probs[0].log()",
             (f"{ENSEMBLE}::test_an_ensemble_averages_its_members_calibrated_probabilities_as_computed_by_hand",)),
    Mutation("overwrite-replaces-users-files", "--out never replaces a user's files, even with --overwrite",
             "autoplace/outdir.py", "    if foreign:\n", "    if foreign and not overwrite:\n",
             ("tests/test_bad_input.py::test_a_users_file_inside_an_autoplace_folder_is_never_replaced",)),
]


def applied(mutation: Mutation, root: Path) -> str:
    """The mutated text of the mutation's file under root; exits if its old text is not there exactly once."""
    text = (root / mutation.file).read_text()
    count = text.count(mutation.old)
    if count != 1:
        sys.exit(f"mutations.py: {mutation.name}: the old text occurs {count} times in {mutation.file}, not once; "
                 f"update the mutation to fit the code:\n{mutation.old}")
    return text.replace(mutation.old, mutation.new)


def copy_repo(into: Path) -> Path:
    """A copy of what the tests need, alone in its own temporary folder."""
    copy = into / "repo"
    copy.mkdir()
    ignore = shutil.ignore_patterns("__pycache__", ".pytest_cache", ".hypothesis")
    for name in COPIED:
        (shutil.copytree if (ROOT / name).is_dir() else shutil.copy2)(ROOT / name, copy / name, **(
            {"ignore": ignore} if (ROOT / name).is_dir() else {}))
    return copy


def environment(copy: Path) -> dict:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(copy), *filter(None, [os.environ.get("PYTHONPATH")])]),
           "PYTHONDONTWRITEBYTECODE": "1"}
    env.setdefault("AUTOPLACE_SHARED_DATA", str(ROOT.parent / "shared" / "data"))  # the copy has no ../shared
    return env


def check_imports_the_copy(copy: Path, env: dict) -> None:
    """The copy, not the editable install of ROOT, must be what `import autoplace` finds."""
    found = subprocess.run([sys.executable, "-c", "import autoplace; print(autoplace.__file__)"], cwd=copy, env=env,
                           capture_output=True, text=True).stdout.strip()
    if not found or not Path(found).resolve().is_relative_to(copy.resolve()):
        sys.exit(f"mutations.py: the tests would import {found or 'nothing'}, not the copy in {copy}")


def run(mutation: Mutation) -> tuple[str, str, float]:
    """(killed | survived | error | timeout, the test that killed it or why not, seconds)."""
    with tempfile.TemporaryDirectory(prefix="autoplace-mutant-") as tmp:
        copy = copy_repo(Path(tmp))
        (copy / mutation.file).write_text(applied(mutation, copy))
        env = environment(copy)
        check_imports_the_copy(copy, env)
        start = time.perf_counter()
        proc = subprocess.Popen([sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider",
                                 *mutation.tests], cwd=copy, env=env, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True, start_new_session=True)
        try:
            output, _ = proc.communicate(timeout=TIMEOUT)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
            return "timeout", f"tests ran over {TIMEOUT} s", time.perf_counter() - start
        seconds = time.perf_counter() - start
    failed = re.search(r"^(?:FAILED|ERROR) (.+?)(?: - .*)?$", output, re.MULTILINE)
    if proc.returncode == 1 and failed:
        return "killed", failed.group(1).removeprefix("tests/"), seconds
    if proc.returncode == 0:
        return "survived", "", seconds
    print(output[-3000:], file=sys.stderr)
    return "error", f"pytest exit status {proc.returncode}", seconds


def main(argv: list[str]) -> int:
    names = [a for a in argv if not a.startswith("-")]
    unknown = set(names) - {m.name for m in MUTATIONS}
    if unknown:
        sys.exit(f"mutations.py: no mutation named {', '.join(sorted(unknown))}")
    chosen = [m for m in MUTATIONS if not names or m.name in names]
    for mutation in chosen:  # every mutation must fit the code before any test runs
        applied(mutation, ROOT)
    if "--check" in argv:
        print(f"{len(chosen)} mutations apply")
        return 0
    rows, start = [], time.perf_counter()
    for i, mutation in enumerate(chosen, 1):
        result, by, seconds = run(mutation)
        rows.append((mutation.name, mutation.promise, result, f"`{by}`" if by else "", f"{seconds:.0f}"))
        print(f"[{i}/{len(chosen)}] {mutation.name}: {result} {by} ({seconds:.0f} s)", flush=True)
    header = ("mutation", "promise", "result", "killed by", "s")
    print()
    for row in (header, ("---",) * len(header), *rows):
        print("| " + " | ".join(row) + " |")
    killed = sum(row[2] == "killed" for row in rows)
    print(f"\n{killed} of {len(rows)} mutations killed in {time.perf_counter() - start:.0f} s")
    return 0 if killed == len(rows) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
