# The payloop application image: api, worker, sandbox PSP and migrations are all `payloop <command>`
# (entrypoints/cli.py).
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1
WORKDIR /app
COPY pyproject.toml README.md ./
COPY payloop ./payloop
COPY workflows ./workflows
COPY activities ./activities
COPY api ./api
COPY workers ./workers
COPY ledger ./ledger
COPY psp ./psp
COPY players ./players
COPY entrypoints ./entrypoints
RUN pip install . && useradd --system --uid 10001 payloop
USER payloop
EXPOSE 8000 8100
CMD ["payloop", "api"]
