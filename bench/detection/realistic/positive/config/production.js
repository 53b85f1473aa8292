module.exports = {
  port: process.env.PORT || 8080,
  mail: {
    provider: 'sendgrid',
    apiKey: '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',
    from: 'Example Support <support@example.com>',
  },
  cache: { ttlSeconds: 600 },
};
