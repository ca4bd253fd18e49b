// The resource group's contents: identity, storage, monitoring, Flex Consumption plan and Function App.
param location string
param tags object
param resourceToken string
param dataverseEnvironments string
param syncSchedule string
param syncProfile string
param operatorPrincipalId string
param alertEmail string
param webhookSecretInKeyVault string
param adminAppClientId string
param mailboxTenants string
param crossTenantAppClientId string
param privateNetworking string

var storageName = 'st${resourceToken}'
var packageStorageName = 'stpkg${take(resourceToken, 19)}'
var private = privateNetworking == 'true'
var deploymentContainer = 'app-package'
var taskHub = 'fssync${take(resourceToken, 8)}'
// Built-in role definition ids
var storageBlobDataOwner = 'b7e6dc6d-f1e8-4753-8033-0f276bb0955b'
var storageBlobDataContributor = 'ba92f5b4-2d11-453d-a403-e96b0029c9fe'
var storageQueueDataContributor = '974c5e8b-45b9-4653-ba55-5f855dd0fb88'
var storageTableDataContributor = '0a9a7e1f-b9d0-4cc4-a60d-0319b160aaa3'
var storageTableDataReader = '76199698-9eea-4c19-bc75-cec21354c6b6'
var monitoringMetricsPublisher = '3913510d-42f4-4e42-8a64-420c390055eb'
var keyVaultSecretsUser = '4633458b-17de-408a-b874-0445c86b69e6'
var webhookSecretName = 'webhook-header-secret'

resource identity 'Microsoft.ManagedIdentity/userAssignedIdentities@2023-01-31' = {
  name: 'id-${resourceToken}'
  location: location
  tags: tags
}

// The package the platform runs is written by the deployment's own identity into an account of its own: the runtime
// identity, Storage Blob Data Owner on the state account (the Functions host's blobs), holds no role here.
resource deployIdentity 'Microsoft.ManagedIdentity/userAssignedIdentities@2023-01-31' = {
  name: 'id-deploy-${resourceToken}'
  location: location
  tags: tags
}

resource packageStorage 'Microsoft.Storage/storageAccounts@2023-05-01' = {
  #checkov:skip=CKV_AZURE_59:The platform's deployment service writes the package from outside any virtual network (OneDeploy), so this account keeps its public endpoint; access is identity-only (shared keys off) over TLS 1.2
  #checkov:skip=CKV_AZURE_35:Same reason: the deployment service must reach the account; no key or SAS can be used against it
  #checkov:skip=CKV_AZURE_206:Locally redundant storage is enough for a package the next deployment writes again
  #checkov:skip=CKV_AZURE_43:The name is 'stpkg' + uniqueString(), always lowercase letters and digits; the check cannot evaluate the expression
  name: packageStorageName
  location: location
  tags: tags
  kind: 'StorageV2'
  sku: {
    name: 'Standard_LRS'
  }
  properties: {
    allowSharedKeyAccess: false
    allowBlobPublicAccess: false
    minimumTlsVersion: 'TLS1_2'
    supportsHttpsTrafficOnly: true
    defaultToOAuthAuthentication: true
    publicNetworkAccess: 'Enabled'
    networkAcls: {
      defaultAction: 'Allow'
      bypass: 'AzureServices'
    }
    encryption: {
      keySource: 'Microsoft.Storage'
      requireInfrastructureEncryption: true
      services: {
        blob: {
          enabled: true
        }
      }
    }
  }
}

resource packageBlobs 'Microsoft.Storage/storageAccounts/blobServices@2023-05-01' = {
  parent: packageStorage
  name: 'default'
}

resource packageContainer 'Microsoft.Storage/storageAccounts/blobServices/containers@2023-05-01' = {
  parent: packageBlobs
  name: deploymentContainer
  properties: {
    publicAccess: 'None'
  }
}

resource packageWriter 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(packageContainer.id, deployIdentity.id, storageBlobDataContributor)
  scope: packageContainer
  properties: {
    principalId: deployIdentity.properties.principalId
    principalType: 'ServicePrincipal'
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', storageBlobDataContributor)
  }
}

resource storage 'Microsoft.Storage/storageAccounts@2023-05-01' = {
  #checkov:skip=CKV_AZURE_59:Public network access is closed in the private-network mode (privateNetworking=true); by default Flex Consumption without a virtual network reaches its storage over the public endpoint, identity-only (shared keys off) over TLS 1.2
  #checkov:skip=CKV_AZURE_35:Same reason: the default network rule is Deny in the private-network mode, and must allow the Functions host without a virtual network; no key or SAS can be used against it
  #checkov:skip=CKV_AZURE_206:Locally redundant storage is enough for sync state; the next cycle rebuilds what it needs from Dataverse
  #checkov:skip=CKV_AZURE_43:The name is 'st' + uniqueString(), always 15 lowercase letters and digits; the check cannot evaluate the expression
  name: storageName
  location: location
  tags: tags
  kind: 'StorageV2'
  sku: {
    name: 'Standard_LRS'
  }
  properties: {
    allowSharedKeyAccess: false
    allowBlobPublicAccess: false
    minimumTlsVersion: 'TLS1_2'
    supportsHttpsTrafficOnly: true
    defaultToOAuthAuthentication: true
    publicNetworkAccess: private ? 'Disabled' : 'Enabled'
    networkAcls: {
      defaultAction: private ? 'Deny' : 'Allow'
      bypass: 'AzureServices'
    }
    encryption: {
      keySource: 'Microsoft.Storage'
      requireInfrastructureEncryption: true
      services: {
        blob: {
          enabled: true
        }
        table: {
          enabled: true
          keyType: 'Account'
        }
        queue: {
          enabled: true
          keyType: 'Account'
        }
      }
    }
  }
}


resource logs 'Microsoft.OperationalInsights/workspaces@2023-09-01' = {
  name: 'log-${resourceToken}'
  location: location
  tags: tags
  properties: {
    retentionInDays: 90
    sku: {
      name: 'PerGB2018'
    }
  }
}

resource insights 'Microsoft.Insights/components@2020-02-02' = {
  name: 'appi-${resourceToken}'
  location: location
  tags: tags
  kind: 'web'
  properties: {
    Application_Type: 'web'
    WorkspaceResourceId: logs.id
    DisableLocalAuth: true
  }
}

// Secrets an administrator sets (the webhook's header secret): Bicep creates the vault and the app's read access,
// never the secret, so `azd provision` never wipes one an administrator set.
resource vault 'Microsoft.KeyVault/vaults@2023-07-01' = {
  #checkov:skip=CKV_AZURE_109:The vault is private in the private-network mode (privateNetworking=true); by default Flex Consumption without a virtual network reaches it over its public endpoint, RBAC-only, for the app's identity
  #checkov:skip=CKV_AZURE_189:Same reason: public network access is off in the private-network mode and must stay on without a virtual network; no access policy or key grants anything
  #checkov:skip=CKV2_AZURE_32:The private endpoint comes with the private-network mode (infra/private-network.bicep), off by default
  name: 'kv-${take(resourceToken, 20)}'
  location: location
  tags: tags
  properties: {
    tenantId: subscription().tenantId
    sku: {
      family: 'A'
      name: 'standard'
    }
    enableRbacAuthorization: true
    enableSoftDelete: true
    softDeleteRetentionInDays: 90
    enablePurgeProtection: true
    publicNetworkAccess: private ? 'Disabled' : 'Enabled'
    networkAcls: {
      defaultAction: private ? 'Deny' : 'Allow'
      bypass: 'AzureServices'
    }
  }
}

module network 'private-network.bicep' = if (private) {
  name: 'private-network'
  params: {
    location: location
    tags: tags
    resourceToken: resourceToken
    storageId: storage.id
    vaultId: vault.id
  }
}

resource plan 'Microsoft.Web/serverfarms@2024-04-01' = {
  #checkov:skip=CKV_AZURE_225:Flex Consumption zone redundancy is not offered in every region and would fail the deployment there; a missed cycle is caught by the next one
  name: 'plan-${resourceToken}'
  location: location
  tags: tags
  kind: 'functionapp'
  sku: {
    tier: 'FlexConsumption'
    name: 'FC1'
  }
  properties: {
    reserved: true
  }
}

resource functionApp 'Microsoft.Web/sites@2024-04-01' = {
  #checkov:skip=CKV_AZURE_17:No client certificates: the HTTP functions are administrator endpoints protected by function keys
  #checkov:skip=CKV_AZURE_222:Public network access stays on for the administration HTTP functions (function keys); the timer needs no inbound call
  #checkov:skip=CKV_AZURE_212:Flex Consumption scales instances by itself; a missed cycle is caught by the next timer
  #checkov:skip=CKV_AZURE_213:Flex Consumption instances are managed by the platform; there is no load-balanced web front end to health-check
  name: 'func-${resourceToken}'
  location: location
  tags: union(tags, {
    'azd-service-name': 'sync'
  })
  kind: 'functionapp,linux'
  identity: {
    type: 'UserAssigned'
    userAssignedIdentities: {
      '${identity.id}': {}
      '${deployIdentity.id}': {}
    }
  }
  properties: {
    serverFarmId: plan.id
    virtualNetworkSubnetId: private ? network.outputs.integrationSubnetId : null
    keyVaultReferenceIdentity: identity.id
    httpsOnly: true
    clientCertEnabled: false
    functionAppConfig: {
      deployment: {
        storage: {
          type: 'blobContainer'
          value: '${packageStorage.properties.primaryEndpoints.blob}${deploymentContainer}'
          authentication: {
            type: 'UserAssignedIdentity'
            userAssignedIdentityResourceId: deployIdentity.id
          }
        }
      }
      scaleAndConcurrency: {
        maximumInstanceCount: 40
        instanceMemoryMB: 2048
      }
      runtime: {
        name: 'python'
        version: '3.11'
      }
    }
    siteConfig: {
      minTlsVersion: '1.2'
      ftpsState: 'Disabled'
      http20Enabled: true
      appSettings: [
        {
          name: 'AzureWebJobsStorage__accountName'
          value: storage.name
        }
        {
          name: 'AzureWebJobsStorage__credential'
          value: 'managedidentity'
        }
        {
          name: 'AzureWebJobsStorage__clientId'
          value: identity.properties.clientId
        }
        {
          name: 'APPLICATIONINSIGHTS_CONNECTION_STRING'
          value: insights.properties.ConnectionString
        }
        {
          name: 'APPLICATIONINSIGHTS_AUTHENTICATION_STRING'
          value: 'ClientId=${identity.properties.clientId};Authorization=AAD'
        }
        {
          name: 'DURABLE_TASK_HUB'
          value: taskHub
        }
        {
          name: 'AZURE_CLIENT_ID'
          value: identity.properties.clientId
        }
        {
          name: 'SYNC_CREDENTIAL'
          value: 'managed-identity'
        }
        {
          name: 'DATAVERSE_ENVIRONMENTS'
          value: dataverseEnvironments
        }
        {
          name: 'GRAPH_BASE_URL'
          value: 'https://graph.microsoft.com/v1.0'
        }
        {
          name: 'STATE_STORAGE_TABLE_ENDPOINT'
          value: storage.properties.primaryEndpoints.table
        }
        {
          name: 'STATE_STORAGE_CONNECTION_STRING'
          value: ''
        }
        {
          name: 'STATE_TABLE_PREFIX'
          value: 'fssync'
        }
        {
          name: 'SYNC_SCHEDULE'
          value: syncSchedule
        }
        {
          name: 'SYNC_PROFILE'
          value: syncProfile
        }
        {
          name: 'SYNC_WINDOW_PAST_DAYS'
          value: '7'
        }
        {
          name: 'SYNC_WINDOW_FUTURE_DAYS'
          value: '14'
        }
        {
          name: 'PROPAGATE_CANCELLATIONS'
          value: syncProfile == 'enhanced' ? 'true' : 'false'
        }
        {
          name: 'LOGICAL_DELETES'
          value: 'unlink'
        }
        {
          name: 'REFRESH_WORK_ORDER_FIELDS'
          value: syncProfile == 'enhanced' ? 'true' : 'false'
        }
        {
          name: 'REMOVE_REASSIGNED_FUTURE_EVENTS'
          value: syncProfile == 'enhanced' ? 'true' : 'false'
        }
        {
          name: 'MASS_DELETE_THRESHOLD_PERCENT'
          value: '50'
        }
        {
          name: 'MASS_DELETE_MIN_COUNT'
          value: '10'
        }
        {
          name: 'MAILBOX_TENANTS'
          value: mailboxTenants
        }
        {
          // The other tenants are reached through this app with the managed identity's token as a federated
          // credential (workload identity federation): no client secret or certificate anywhere.
          name: 'CROSS_TENANT_APP_CLIENT_ID'
          value: crossTenantAppClientId
        }
        {
          name: 'WEBHOOK_HEADER_SECRET'
          // A Key Vault reference, resolved with the app's identity; on only once the secret exists (docs/webhooks.md).
          value: webhookSecretInKeyVault == 'true' ? '@Microsoft.KeyVault(VaultName=${vault.name};SecretName=${webhookSecretName})' : ''
        }
      ]
    }
  }
}

// The Functions host, Durable Functions and the sync state reach storage with the identity only.
resource blobOwner 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(storage.id, identity.id, storageBlobDataOwner)
  scope: storage
  properties: {
    principalId: identity.properties.principalId
    principalType: 'ServicePrincipal'
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', storageBlobDataOwner)
  }
}

resource queueContributor 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(storage.id, identity.id, storageQueueDataContributor)
  scope: storage
  properties: {
    principalId: identity.properties.principalId
    principalType: 'ServicePrincipal'
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', storageQueueDataContributor)
  }
}

resource tableContributor 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(storage.id, identity.id, storageTableDataContributor)
  scope: storage
  properties: {
    principalId: identity.properties.principalId
    principalType: 'ServicePrincipal'
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', storageTableDataContributor)
  }
}

resource metricsPublisher 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(insights.id, identity.id, monitoringMetricsPublisher)
  scope: insights
  properties: {
    principalId: identity.properties.principalId
    principalType: 'ServicePrincipal'
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', monitoringMetricsPublisher)
  }
}

// App Service Authentication (Easy Auth) in front of the administrative routes: a Microsoft Entra bearer token for
// the app registration (its two app roles, Sync.Operator and Mailbox.Approver, are checked by the functions).
// Token validation needs no client secret. The webhook keeps its own authentication (function key, header secret).
resource auth 'Microsoft.Web/sites/config@2024-04-01' = if (!empty(adminAppClientId)) {
  #checkov:skip=CKV_AZURE_66:checkov reads this authsettingsV2 config as a site configuration; the Function App itself is checked above
  #checkov:skip=CKV_AZURE_63:checkov reads this authsettingsV2 config as a site configuration; the Function App itself is checked above
  #checkov:skip=CKV_AZURE_222:checkov reads this authsettingsV2 config as a site configuration; the Function App itself is checked above
  #checkov:skip=CKV_AZURE_80:checkov reads this authsettingsV2 config as a site configuration; the Function App itself is checked above
  #checkov:skip=CKV_AZURE_13:checkov reads this authsettingsV2 config as a site configuration; the Function App itself is checked above
  #checkov:skip=CKV_AZURE_88:checkov reads this authsettingsV2 config as a site configuration; the Function App itself is checked above
  #checkov:skip=CKV_AZURE_65:checkov reads this authsettingsV2 config as a site configuration; the Function App itself is checked above
  parent: functionApp
  name: 'authsettingsV2'
  properties: {
    platform: {
      enabled: true
    }
    globalValidation: {
      requireAuthentication: true
      unauthenticatedClientAction: 'Return401'
      excludedPaths: [
        '/api/dataverse/webhook'
      ]
    }
    identityProviders: {
      azureActiveDirectory: {
        enabled: true
        registration: {
          openIdIssuer: '${environment().authentication.loginEndpoint}${tenant().tenantId}/v2.0'
          clientId: adminAppClientId
        }
        validation: {
          allowedAudiences: [
            'api://${adminAppClientId}'
            adminAppClientId
          ]
        }
      }
    }
    login: {
      tokenStore: {
        enabled: false
      }
    }
  }
}

resource vaultReader 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(vault.id, identity.id, keyVaultSecretsUser)
  scope: vault
  properties: {
    principalId: identity.properties.principalId
    principalType: 'ServicePrincipal'
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', keyVaultSecretsUser)
  }
}

// Alerts: a cycle that failed or was blocked, mailboxes that turned Failure, and no successful cycle for an hour.
resource operators 'Microsoft.Insights/actionGroups@2023-01-01' = {
  name: 'ag-${resourceToken}'
  location: 'global'
  tags: tags
  properties: {
    groupShortName: 'fssync'
    enabled: true
    emailReceivers: empty(alertEmail) ? [] : [
      {
        name: 'operators'
        emailAddress: alertEmail
        useCommonAlertSchema: true
      }
    ]
  }
}

var alerts = [
  {
    name: 'cycle-failed-or-blocked'
    description: 'A sync cycle failed (an environment could not be read) or some mailboxes failed or were blocked (D5).'
    severity: 2
    window: 'PT15M'
    query: 'traces | where message == "cycle finished" | where tostring(customDimensions.outcome) in ("failed", "partial")'
    operator: 'GreaterThan'
    threshold: 0
  }
  {
    name: 'mailboxes-turned-failure'
    description: 'Mailboxes were set to Failure (M6): not found, access denied or disabled; they are skipped until tested again.'
    severity: 2
    window: 'PT15M'
    query: 'customMetrics | where name == "sync.mailbox.outcomes" | where tostring(customDimensions.outcome) == "failed"'
    operator: 'GreaterThan'
    threshold: 0
  }
  {
    name: 'no-successful-cycle-for-an-hour'
    description: 'No sync cycle succeeded in the last hour: the timer, the host or every environment is failing.'
    severity: 1
    window: 'PT1H'
    query: 'traces | where message == "cycle finished" | where tostring(customDimensions.outcome) == "succeeded"'
    operator: 'Equal'
    threshold: 0
  }
]

resource alertRules 'Microsoft.Insights/scheduledQueryRules@2023-03-15-preview' = [for alert in alerts: {
  name: 'alert-${alert.name}-${resourceToken}'
  location: location
  tags: tags
  properties: {
    displayName: alert.name
    description: alert.description
    severity: alert.severity
    enabled: true
    scopes: [
      insights.id
    ]
    evaluationFrequency: 'PT15M'
    windowSize: alert.window
    criteria: {
      allOf: [
        {
          query: alert.query
          timeAggregation: 'Count'
          operator: alert.operator
          threshold: alert.threshold
          failingPeriods: {
            numberOfEvaluationPeriods: 1
            minFailingPeriodsToAlert: 1
          }
        }
      ]
    }
    actions: {
      actionGroups: [
        operators.id
      ]
    }
  }
}]

resource operatorTableReader 'Microsoft.Authorization/roleAssignments@2022-04-01' = if (!empty(operatorPrincipalId)) {
  name: guid(storage.id, operatorPrincipalId, storageTableDataReader)
  scope: storage
  properties: {
    principalId: operatorPrincipalId
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', storageTableDataReader)
  }
}

resource workbook 'Microsoft.Insights/workbooks@2023-06-01' = {
  name: guid(resourceGroup().id, 'fieldservice-outlook-sync-health')
  location: location
  tags: tags
  kind: 'shared'
  properties: {
    displayName: 'Field Service Outlook sync health'
    category: 'workbook'
    sourceId: insights.id
    serializedData: loadTextContent('workbook.json')
  }
}

output functionAppName string = functionApp.name
output identityClientId string = identity.properties.clientId
output identityPrincipalId string = identity.properties.principalId
output tableEndpoint string = storage.properties.primaryEndpoints.table
output applicationInsightsName string = insights.name
output keyVaultName string = vault.name
