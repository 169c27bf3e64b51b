"""A token's gallery: its finished jobs deleted with their files, and a job's files as one zip.

``DELETE /jobs/{id}`` on a finished job removes it (the job API's route calls ``delete_job``);
``GET /jobs/{id}/files.zip`` answers every file of the job's images, named as ``client.py`` names
them: final PNGs, GIFs, sprite sheets, an animation's frames and MP4, a VR animation's eye views and
the steps ``intermediate_saves`` kept (in ``partials/``, as in ``output_dir``), of every image of a
batch (``batch_size`` above 1).
"""

from __future__ import annotations

import io
import shutil
import zipfile
from pathlib import Path

from fastapi import Request  # at module level: FastAPI reads the handlers' annotations here

from disco_service.server.http_api import ApiError, _file_name
from disco_service.server.job_queue import Job, JobQueue
from disco_service.server.results import FINAL, GIF, MP4, SPRITE, animation_frame_name
from disco_service.wire import ErrorCode, JobStatus, batch_image_ids

__all__ = ["delete_job", "job_files", "mount"]


def delete_job(queue: JobQueue, job: Job) -> None:
    """Remove a finished job from the state store, and its images' folders in the result store and
    its init image or video. Raises ``ValueError`` for a job not finished (cancel it first)."""
    if not job.finished:
        raise ValueError(f"job {job.id} is {job.status}: cancel it first")
    batch = int(job.settings.get("batch_size") or 1)  # a batch's further images are kept under ids of their own
    doc_ids = [i for d in queue.state.doc_ids_of(job.id) for i in batch_image_ids(d, batch)]
    queue.state.delete_job(job.id)
    for doc_id in doc_ids:
        try:
            shutil.rmtree(queue.store.entry(doc_id), ignore_errors=True)
        except ValueError:  # not a Document id the store would keep files under
            pass
    for suffix in (".init", ".video"):
        (queue.dir / f"{job.id}{suffix}").unlink(missing_ok=True)


def job_files(queue: JobQueue, job: Job) -> list[tuple[str, Path]]:
    """The job's files as (name in the zip, path): per image its final PNG (when done), GIF,
    sprite sheet, an animation's frames and MP4, its eye views and intermediate saves; with
    ``batch_size`` above 1 those of every image of each batch (named ``..._{i}_{k}``, as client.py
    names them)."""
    found: list[tuple[str, Path]] = []
    names = {FINAL: "final.png", GIF: "frames.gif", SPRITE: "sprite.png", MP4: "video.mp4"}
    batch = int(job.settings.get("batch_size") or 1)
    for image in job.images:
        if not image.finished_status:
            continue
        for k, doc_id in enumerate(batch_image_ids(image.doc_id, batch)):
            position = k if batch > 1 else None
            for stored, api_name in names.items():
                if stored == FINAL and image.status != JobStatus.DONE:
                    continue
                path = queue.store.file(doc_id, stored)
                if path is not None:
                    found.append((_file_name(job, image, api_name, position), path))
            for number, path in queue.store.animation_frames(doc_id):
                found.append((_file_name(job, image, animation_frame_name(number)), path))
            for name, _ in queue.store.pictures(doc_id):
                if (path := queue.store.file(doc_id, name)) is not None:
                    found.append((_file_name(job, image, name, position), path))
    return found


def mount(app, queue: JobQueue) -> None:
    """Add ``GET /jobs/{id}/files.zip`` to ``app``."""
    from fastapi.responses import Response

    async def files_zip(job_id: str, request: Request):
        """Every file of the job's finished images, in one zip."""
        job = queue.get(request.state.owner, job_id)
        if job is None:
            raise ApiError(404, ErrorCode.JOB_NOT_FOUND, f"no job {job_id!r} for this caller")
        files = job_files(queue, job)
        if not files:
            raise ApiError(404, ErrorCode.FILE_NOT_FOUND, f"job {job_id!r} has no finished files yet ({job.status})")
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as archive:  # PNG, GIF and MP4 are compressed already
            for name, path in files:
                archive.write(path, name)
        headers = {"Content-Disposition": f'attachment; filename="disco-{job_id}.zip"'}
        return Response(buffer.getvalue(), media_type="application/zip", headers=headers)

    app.add_api_route("/jobs/{job_id}/files.zip", files_zip, methods=["GET"], tags=["jobs"])
